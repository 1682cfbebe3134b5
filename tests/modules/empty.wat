;; A valid component with no exports at all.
(component)
