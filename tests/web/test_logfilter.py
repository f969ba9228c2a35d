"""Repeated log lines: a few copies per interval, then one count."""

from __future__ import annotations

import logging

import pytest

from meeting.logfilter import RepeatFilter, install


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name} {self.format(record)}")


@pytest.fixture
def logged() -> tuple[logging.Logger, _Lines, _Clock]:
    logger = logging.getLogger("test.repeat")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = _Lines()
    clock = _Clock()
    handler.addFilter(RepeatFilter(handler, burst=3, interval=60.0, clock=clock))
    logger.addHandler(handler)
    yield logger, handler, clock
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_flood_becomes_a_few_lines_and_a_count(logged) -> None:
    logger, handler, clock = logged
    for i in range(10_000):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.error("socket.accept() out of system resource", exc_info=True)
        clock.now += 0.001
    assert len(handler.lines) == 3
    assert all("Too many open files" in line for line in handler.lines)  # tracebacks kept
    clock.now += 60
    logger.info("something else")
    assert handler.lines[3:] == [
        "ERROR test.repeat socket.accept() out of system resource ... repeated 9997 more times in 60 s",
        "INFO test.repeat something else",
    ]
    # The next interval starts afresh.
    logger.error("socket.accept() out of system resource")
    assert handler.lines[-1] == "ERROR test.repeat socket.accept() out of system resource"


def test_messages_differ_by_their_arguments_and_level(logged) -> None:
    logger, handler, clock = logged
    for i in range(5):
        logger.info("http path=%s", f"/m/{i}")
        logger.info("http path=%s", "/same")
        logger.warning("http path=%s", "/same")
    assert len(handler.lines) == 5 + 3 + 3


def test_reports_that_differ_after_their_first_line_are_one_message(logged) -> None:
    logger, handler, clock = logged
    for i in range(10):
        logger.error("Task exception was never retrieved\nfuture: <Task name='Task-%d'>", i)
    assert len(handler.lines) == 3
    handler.filters[0].flush()
    assert handler.lines[-1] == (
        "ERROR test.repeat Task exception was never retrieved ... repeated 7 more times in 1 s")


def test_flush_counts_what_was_dropped(logged) -> None:
    logger, handler, clock = logged
    for _ in range(7):
        logger.warning("bad request remote=%s", "127.0.0.1")
    clock.now += 5
    handler.filters[0].flush()
    assert handler.lines[-1] == (
        "WARNING test.repeat bad request remote=127.0.0.1 ... repeated 4 more times in 5 s")
    handler.filters[0].flush()  # nothing more to say
    assert len(handler.lines) == 4


def test_many_distinct_messages_keep_memory_bounded(logged) -> None:
    logger, handler, clock = logged
    for i in range(5000):
        logger.info("line %d", i)
    assert len(handler.lines) == 5000
    # "line 0" was forgotten to make room: it starts a new window of three.
    for _ in range(4):
        logger.info("line %d", 0)
    assert len(handler.lines) == 5003


def test_install_puts_one_filter_on_each_handler() -> None:
    logger = logging.getLogger("test.repeat.install")
    handlers = [_Lines(), _Lines()]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        filters = install(logger)
        assert [h.filters for h in handlers] == [[filters[0]], [filters[1]]]
        assert install(logger) == []  # once is enough
        assert [h.filters for h in handlers] == [[filters[0]], [filters[1]]]
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
