"""Rows the application writes before it publishes: datasets and documents with their text."""

from dify_events.consumers.domain import Dataset, Document

KAFKA_TEXT = """Apache Kafka keeps events in partitioned topics.

A consumer group shares the partitions of its topics among its members, and commits offsets."""
AVRO_TEXT = "Avro writes records in a compact binary form, described by a schema.\n\nSchemas evolve."


def dataset(id="ds1", tenant_id="t1") -> Dataset:
    return Dataset(id=id, tenant_id=tenant_id, name=f"Dataset {id}")


def document(id, dataset_id="ds1", content=KAFKA_TEXT, tenant_id="t1", position=1, **fields) -> Document:
    return Document(id=id, tenant_id=tenant_id, dataset_id=dataset_id, name=f"{id}.txt", content=content,
                    position=position, **fields)
