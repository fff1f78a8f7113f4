"""Message queues (RabbitMQ, Kafka): QueueSource, the drain loop, message decoding, per-broker streams."""
