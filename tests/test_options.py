"""The dataset options are defined once, in kafka_ml.dataset (`DecodeOptions`, `DatasetOptions`),
for the classes that pass them on to `KafkaDataset`: these tests keep that definition and
`KafkaDataset`'s own signature the same, so that a new option is declared in both or neither."""

from __future__ import annotations

import inspect
import typing

import pytest
from kafka_ml.dataset import DatasetOptions, DecodeOptions, KafkaDataset
from kafka_ml.inference import InferenceLoop

# KafkaDataset's arguments that say what is read, how it is batched and committed, and its
# metrics: each class that reads through a KafkaDataset sets these itself.
READ_ARGUMENTS = {
    "topics", "config", "partitions", "metadata", "batch_size", "max_wait", "start", "end", "commit",
    "metrics", "metrics_name",
}  # fmt: skip


def source_annotations(options: type) -> dict[str, str]:
    """A TypedDict's keys (its bases' too) and their annotations as written: with `from __future__
    import annotations` a TypedDict keeps each as a ForwardRef."""
    return {
        name: annotation.__forward_arg__ if isinstance(annotation, typing.ForwardRef) else annotation
        for name, annotation in options.__annotations__.items()
    }


def test_the_options_are_keyword_arguments_of_kafka_dataset_with_the_same_types() -> None:
    parameters = inspect.signature(KafkaDataset.__init__).parameters
    for name, annotation in source_annotations(DatasetOptions).items():
        assert name in parameters, f"DatasetOptions has {name!r}, KafkaDataset does not"
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[name].annotation == annotation, name


def test_every_kafka_dataset_argument_is_an_option_or_a_read_argument() -> None:
    parameters = set(inspect.signature(KafkaDataset.__init__).parameters) - {"self"}
    options = set(DatasetOptions.__optional_keys__)
    assert options == set(DecodeOptions.__optional_keys__) | {"dead_letter_topic"}
    assert parameters == options | READ_ARGUMENTS, "a new KafkaDataset argument: add it to DecodeOptions?"


def test_the_classes_that_pass_options_on_do_not_shadow_them() -> None:
    loop = set(inspect.signature(InferenceLoop.__init__).parameters)
    assert not loop & set(DecodeOptions.__optional_keys__)
    torch = pytest.importorskip("kafka_ml.torch")
    iterable = set(inspect.signature(torch.KafkaIterableDataset.__init__).parameters)
    assert not iterable & set(DatasetOptions.__optional_keys__)


def test_the_iterable_dataset_takes_the_metrics_arguments_of_kafka_dataset() -> None:
    torch = pytest.importorskip("kafka_ml.torch")
    iterable = inspect.signature(torch.KafkaIterableDataset.__init__).parameters
    dataset = inspect.signature(KafkaDataset.__init__).parameters
    for name in ("metrics", "metrics_name"):
        assert iterable[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert (iterable[name].annotation, iterable[name].default) == (
            dataset[name].annotation,
            dataset[name].default,
        ), name
