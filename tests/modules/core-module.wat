;; A core wasm module, not a component.
(module (func (export "synchronize")))
