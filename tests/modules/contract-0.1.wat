;; A component built against contract 0.1.0, which 0.2.0 broke (the
;; transfer report gained fields): it imports `clock` of 0.1.0, with the
;; right type.
(component
  (import "wasmover:mover/clock@0.1.0" (instance
    (export "now-ms" (func (result u64))))))
