;; A component built against a contract this host does not serve: it
;; imports an interface of wasmover:mover@9.0.0.
(component
  (import "wasmover:mover/log@9.0.0" (instance
    (export "log" (func (param "message" string))))))
