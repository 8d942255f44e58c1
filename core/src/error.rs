//! Kafka error codes. The `kafka-protocol` crate's table is the single source of truth.

pub use kafka_protocol::ResponseError as ErrorCode;

/// The wire value of an optional error: 0 means none.
pub fn code(error: Option<ErrorCode>) -> i16 {
    error.map_or(0, |e| e.code())
}
