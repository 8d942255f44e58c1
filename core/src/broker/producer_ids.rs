//! InitProducerId for idempotent producers (KIP-98, KIP-360): each broker hands out ids from
//! a block the controller allocated to it through the metadata log
//! ([`crate::controller::Controller::handle_allocate_producer_ids`]), so no id is ever given
//! twice in the cluster.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::error::ErrorCode;

/// The ids a broker may still hand out (Kafka's `RPCProducerIdManager` block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerIdBlock {
    next: i64,
    end: i64,
}

impl ProducerIdBlock {
    /// The next id of the block; none once it is used up (ask the controller for another).
    pub fn take(&mut self) -> Option<i64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// A new block from the controller replaces what is left of the old one.
    pub fn refill(&mut self, first: i64, count: i64) {
        self.next = first;
        self.end = first.saturating_add(count.max(0));
    }
}

/// An InitProducerId the broker answers without an id: a transactional id, since odradek has
/// no transaction coordinator yet.
pub fn init_refusal(request: &InitProducerIdRequest) -> Option<InitProducerIdResponse> {
    request.transactional_id.is_some().then(|| init_answer(Err(ErrorCode::TransactionalIdAuthorizationFailed)))
}

/// The answer: a fresh id at epoch 0, or the error. An idempotent producer that asks again
/// (KIP-360: after UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE_NUMBER, with its old id and
/// epoch) gets a fresh id too, as Kafka's coordinator does without a transactional id.
pub fn init_answer(producer_id: Result<i64, ErrorCode>) -> InitProducerIdResponse {
    match producer_id {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(error) => InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TransactionalId;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn a_block_hands_out_each_id_once_then_asks_for_more() {
        let mut block = ProducerIdBlock::default();
        assert_eq!(block.take(), None, "no block yet");
        block.refill(1000, 3);
        assert_eq!([block.take(), block.take(), block.take(), block.take()], [Some(1000), Some(1001), Some(1002), None]);
    }

    #[test]
    fn a_transactional_id_is_refused_and_an_idempotent_producer_gets_epoch_zero() {
        let transactional = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t"))));
        let refused = init_refusal(&transactional).expect("refused");
        assert_eq!(refused.error_code, ErrorCode::TransactionalIdAuthorizationFailed.code());
        assert!(init_refusal(&InitProducerIdRequest::default().with_transactional_id(None)).is_none());
        let answer = init_answer(Ok(42));
        assert_eq!((answer.error_code, answer.producer_id.0, answer.producer_epoch), (0, 42, 0));
    }
}
