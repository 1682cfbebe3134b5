//! Prints the CustomResourceDefinitions as YAML (`yaml/crds.yaml`).

fn main() {
    print!("{}", wasmover::crd::yaml());
}
