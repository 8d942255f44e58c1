//! AlterClientQuotas and DescribeClientQuotas (KIP-546): the first turned into the
//! controller's [`AlterClientQuotasRequest`], the second answered from the broker's image, as
//! Kafka's brokers answer it from their metadata cache.

use kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest as KafkaAlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::controller::{AlterClientQuotasRequest, ControllerError, MetadataImage, QuotaAlteration};
use crate::error::ErrorCode;
use crate::quota::{QuotaEntity, QuotaValue, IP};

/// The controller's request, and per entry of the client's either its place in it or why it
/// was refused here.
pub fn alter_request(request: &KafkaAlterClientQuotasRequest) -> (AlterClientQuotasRequest, Vec<Result<usize, ControllerError>>) {
    let mut entries = Vec::new();
    let mut placed = Vec::with_capacity(request.entries.len());
    for entry in &request.entries {
        let parts = entry.entity.iter().map(|e| (e.entity_type.to_string(), e.entity_name.as_ref().map(|n| n.to_string()))).collect();
        match QuotaEntity::new(parts) {
            Ok(entity) => {
                let ops = entry
                    .ops
                    .iter()
                    .map(|op| (op.key.to_string(), (!op.remove).then(|| QuotaValue::new(op.value))))
                    .collect();
                placed.push(Ok(entries.len()));
                entries.push(QuotaAlteration { entity, ops });
            }
            Err(message) => placed.push(Err(ControllerError::Invalid(message))),
        }
    }
    (AlterClientQuotasRequest { entries, validate_only: request.validate_only }, placed)
}

/// The answer, entry by entry in the client's order: the controller's result for an entry it
/// decided (`None` for all of them when it could not be reached: `unreachable`).
pub fn alter_response(
    request: &KafkaAlterClientQuotasRequest,
    placed: Vec<Result<usize, ControllerError>>,
    results: Option<Vec<Option<ControllerError>>>,
    unreachable: ControllerError,
) -> AlterClientQuotasResponse {
    let entries = request
        .entries
        .iter()
        .zip(placed)
        .map(|(entry, placed)| {
            let error = match placed {
                Err(e) => Some(e),
                Ok(i) => match &results {
                    Some(results) => results.get(i).cloned().unwrap_or(Some(unreachable.clone())),
                    None => Some(unreachable.clone()),
                },
            };
            alter_client_quotas_response::EntryData::default()
                .with_error_code(error.as_ref().map_or(0, |e| e.code().code()))
                .with_error_message(error.map(|e| StrBytes::from_string(e.to_string())))
                .with_entity(
                    entry
                        .entity
                        .iter()
                        .map(|e| {
                            alter_client_quotas_response::EntityData::default()
                                .with_entity_type(e.entity_type.clone())
                                .with_entity_name(e.entity_name.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

/// Kafka's match types of a filter component.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// The quotas of the entities the filter selects (Kafka's `ClientQuotasImage.describe`): every
/// component must match (an exact name, the default, or any name of the type), and with
/// `strict` the entity may have no other types.
pub fn describe(image: &MetadataImage, request: &DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    if let Err(message) = check_filter(request) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(ErrorCode::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_entries(None);
    }
    let entries = image
        .client_quotas()
        .iter()
        .filter(|(entity, _)| selects(request, entity))
        .map(|(entity, values)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    entity
                        .parts()
                        .iter()
                        .map(|(t, n)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(StrBytes::from_string(t.clone()))
                                .with_entity_name(n.clone().map(StrBytes::from_string))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(k, v)| {
                            describe_client_quotas_response::ValueData::default().with_key(StrBytes::from_string(k.clone())).with_value(v.get())
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

fn check_filter(request: &DescribeClientQuotasRequest) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for c in &request.components {
        let t = c.entity_type.as_str();
        if seen.contains(&t) {
            return Err(format!("Entity type {t} cannot appear more than once in the filter."));
        }
        seen.push(t);
        match c.match_type {
            MATCH_EXACT if c._match.is_none() => return Err(format!("Entity type {t} has an exact match without a name.")),
            MATCH_EXACT | MATCH_DEFAULT | MATCH_SPECIFIED => {}
            other => return Err(format!("Unknown match type {other}.")),
        }
    }
    if seen.contains(&IP) && seen.len() > 1 {
        return Err("Invalid entity filter component combination: ip with user or client-id.".into());
    }
    Ok(())
}

fn selects(request: &DescribeClientQuotasRequest, entity: &QuotaEntity) -> bool {
    let each = request.components.iter().all(|c| match (entity.name(c.entity_type.as_str()), c.match_type) {
        (None, _) => false,
        (Some(name), MATCH_EXACT) => name.is_some() && name == c._match.as_deref(),
        (Some(name), MATCH_DEFAULT) => name.is_none(),
        (Some(_), _) => true,
    });
    let only = !request.strict || entity.parts().iter().all(|(t, _)| request.components.iter().any(|c| c.entity_type.as_str() == t));
    each && only
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::MetadataRecord;
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;

    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        let entities: [&[(&str, Option<&str>)]; 4] =
            [&[("user", Some("alice"))], &[("user", None)], &[("user", Some("alice")), ("client-id", Some("app"))], &[("client-id", None)]];
        for (i, parts) in entities.into_iter().enumerate() {
            let entity = QuotaEntity::new(parts.iter().map(|(t, n)| (t.to_string(), n.map(str::to_owned))).collect()).unwrap();
            let record = MetadataRecord::ClientQuota { entity, key: "producer_byte_rate".into(), value: Some(QuotaValue::new(100.0 * (i + 1) as f64)) };
            image.apply(&record).unwrap();
        }
        image
    }

    fn filter(components: &[(&str, i8, Option<&str>)], strict: bool) -> Vec<Vec<(String, Option<String>)>> {
        let request = DescribeClientQuotasRequest::default().with_strict(strict).with_components(
            components
                .iter()
                .map(|(t, m, n)| {
                    ComponentData::default().with_entity_type(StrBytes::from_string(t.to_string())).with_match_type(*m).with_match(n.map(|n| StrBytes::from_string(n.to_owned())))
                })
                .collect(),
        );
        let response = describe(&image(), &request);
        assert_eq!(response.error_code, 0, "{:?}", response.error_message);
        response
            .entries
            .unwrap()
            .into_iter()
            .map(|e| e.entity.into_iter().map(|p| (p.entity_type.to_string(), p.entity_name.map(|n| n.to_string()))).collect())
            .collect()
    }

    fn named(parts: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        let mut v: Vec<_> = parts.iter().map(|(t, n)| (t.to_string(), n.map(str::to_owned))).collect();
        v.sort();
        v
    }

    #[test]
    fn filters_select_as_kafka_selects() {
        assert_eq!(filter(&[("user", MATCH_EXACT, Some("alice"))], true), vec![named(&[("user", Some("alice"))])]);
        assert_eq!(
            filter(&[("user", MATCH_EXACT, Some("alice"))], false),
            vec![named(&[("client-id", Some("app")), ("user", Some("alice"))]), named(&[("user", Some("alice"))])]
        );
        assert_eq!(filter(&[("user", MATCH_DEFAULT, None)], false), vec![named(&[("user", None)])]);
        assert_eq!(filter(&[("user", MATCH_SPECIFIED, None)], true).len(), 2);
        assert_eq!(filter(&[("client-id", MATCH_SPECIFIED, None)], false).len(), 2);
        assert_eq!(filter(&[], false).len(), 4);
        assert_eq!(filter(&[], true).len(), 0);
    }

    #[test]
    fn bad_filters_are_invalid_requests() {
        let component = |t: &str, m: i8| ComponentData::default().with_entity_type(StrBytes::from_string(t.to_owned())).with_match_type(m).with_match(None);
        for components in [vec![component("user", 2), component("user", 1)], vec![component("user", 0)], vec![component("user", 7)], vec![component("ip", 2), component("user", 2)]] {
            let response = describe(&image(), &DescribeClientQuotasRequest::default().with_components(components));
            assert_eq!(response.error_code, ErrorCode::InvalidRequest.code());
            assert!(response.entries.is_none());
        }
    }
}
