"""Detections pushed out: rules (:mod:`.rules`), ECS documents (:mod:`.documents`), a
signed webhook and a JSON-lines file (:mod:`.targets`), bounded queues with retries
(:mod:`.delivery`), fed by an inference observer (:mod:`.dispatcher`)."""
