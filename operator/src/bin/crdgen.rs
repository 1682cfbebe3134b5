//! Prints the CustomResourceDefinitions as YAML (`yaml/crds.yaml`).

fn main() {
    print!("{}", wasmover_operator::crd::yaml());
}
