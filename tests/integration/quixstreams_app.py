"""Run by test_quixstreams.py with quixstreams (its own venv, scripts/test.sh sets
ODRADEK_QUIXSTREAMS_PYTHON): an exactly-once stateful application. For each input record
{"n": int}, keyed, it adds n to the key's running count and total kept in a state store (so
in a compacted changelog topic) and produces {"count", "total", "n"} under the same key to the
output topic. It runs until SIGTERM (a graceful stop: the last checkpoint is committed) or
SIGKILL (the test's crash).

usage: quixstreams_app.py BOOTSTRAP INPUT OUTPUT GROUP STATE_DIR DELAY_S"""

import sys
import time

from quixstreams import Application

bootstrap, input_topic, output_topic, group, state_dir, delay = sys.argv[1:6] + [float(sys.argv[6])]

app = Application(
    broker_address=bootstrap,
    consumer_group=group,
    auto_offset_reset="earliest",
    processing_guarantee="exactly-once",
    state_dir=state_dir,
    # Many small transactions, so that a kill lands between and inside them.
    commit_interval=0.5,
    loglevel="DEBUG",
    # The transactional.id is random per process (quixstreams' default): a killed process's
    # open transaction is only ended by the coordinator's timeout, kept short here.
    producer_extra_config={"transaction.timeout.ms": 6000, "broker.address.family": "v4"},
    # A killed member leaves the group when its session expires.
    consumer_extra_config={
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "broker.address.family": "v4",
    },
)
source = app.topic(input_topic, key_deserializer="str", value_deserializer="json")
sink = app.topic(output_topic, key_serializer="str", value_serializer="json")


def add(value, state):
    if delay:
        time.sleep(delay)  # slow enough for the test to kill the process midway
    count = state.get("count", 0) + 1
    total = state.get("total", 0) + value["n"]
    state.set("count", count)
    state.set("total", total)
    return {"count": count, "total": total, "n": value["n"]}


app.dataframe(source).apply(add, stateful=True).to_topic(sink)
app.run()
