"""Operations: nginx in front, metrics, health, logs."""
