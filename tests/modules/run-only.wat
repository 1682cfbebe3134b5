;; A valid component that exports only `wasi:cli/run`: a command, not a
;; mover. Loading it works; asking it to move data must fail clearly.
(component
  (core module $m
    (func (export "run") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))
