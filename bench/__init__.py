"""Benchmarks of the platform side by side with hand-written confluent-kafka loops and with
FastStream and Quix Streams, against a real Apache Kafka broker: ``make bench``
(``python -m bench``). Not part of the test suite."""
