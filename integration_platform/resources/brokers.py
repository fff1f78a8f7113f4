"""What every message-broker resource shares (RabbitMQ, Kafka)."""


class BrokerError(RuntimeError):
    """The broker refused or dropped something; the message names broker and queue or topic,
    never a password."""
