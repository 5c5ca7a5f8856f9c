"""Operations: logging set-up (`logging`), the $SYS tree (`sys_tree`), the Prometheus
metrics and health endpoint (`metrics`), and the process figures both report (`figures`)."""
