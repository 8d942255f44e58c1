//! CreateAcls, DescribeAcls and DeleteAcls (KIP-140) as the broker answers them: CreateAcls and
//! DeleteAcls become the active controller's requests and its answers become the Kafka
//! responses; DescribeAcls is answered from the broker's own metadata image. The executor
//! carries the requests to the controller and waits until its image shows the change.
//!
//! Kafka 4.0 removed v0 of these APIs (KIP-896), and kafka-protocol 0.18 has no codec for it,
//! so v0's rule (no pattern type: LITERAL) never applies here: v1+ always carries one.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::acl::{AclBinding, AclBindingFilter, Acls};
use crate::controller::{AclCreateResult, AclDeleteResult};
use crate::error::ErrorCode;

/// Kafka's answer to an ACL API on a broker without an authorizer
/// (`AuthHelper`/`AclApis` when `authorizer` is empty).
pub const NO_AUTHORIZER: &str = "No Authorizer is configured.";

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn no_controller() -> (ErrorCode, String) {
    (ErrorCode::RequestTimedOut, "no active controller answered".to_owned())
}

/// Each creation of `request` as a binding, or the message of its INVALID_REQUEST (the checks of
/// Kafka's `AclControlManager.validateNewAcl`). The `Ok` ones go to the controller.
pub fn create_acls_bindings(request: &CreateAclsRequest) -> Vec<Result<AclBinding, String>> {
    request
        .creations
        .iter()
        .map(|c| {
            AclBinding::from_codes(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
        })
        .collect()
}

/// The Kafka response from the bindings as parsed and the controller's `answer` for the `Ok`
/// ones, in their order (`None`: no controller answered, REQUEST_TIMED_OUT for those).
pub fn create_acls_response(bindings: &[Result<AclBinding, String>], answer: Option<Vec<AclCreateResult>>) -> CreateAclsResponse {
    let mut answered = answer.map(Vec::into_iter);
    let results = bindings
        .iter()
        .map(|binding| {
            let error = match binding {
                Err(message) => Some((ErrorCode::InvalidRequest, message.clone())),
                Ok(_) => match answered.as_mut().map(Iterator::next) {
                    Some(Some(AclCreateResult { error })) => error.map(|e| (e.code(), e.to_string())),
                    // A controller that answered fewer results than it was asked: a bug there,
                    // but not one to answer this client wrongly for.
                    Some(None) | None => Some(no_controller()),
                },
            };
            creation_result(error)
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

fn creation_result(error: Option<(ErrorCode, String)>) -> AclCreationResult {
    match error {
        None => AclCreationResult::default().with_error_message(None),
        Some((code, message)) => AclCreationResult::default().with_error_code(code.code()).with_error_message(Some(s(message))),
    }
}

/// CreateAcls refused whole (SECURITY_DISABLED), every creation answered with `error`.
pub fn create_acls_refused(request: &CreateAclsRequest, error: ErrorCode, message: &str) -> CreateAclsResponse {
    let results = request.creations.iter().map(|_| creation_result(Some((error, message.to_owned())))).collect();
    CreateAclsResponse::default().with_results(results)
}

/// Each filter of `request`, or the message of its INVALID_REQUEST. The `Ok` ones go to the
/// controller.
pub fn delete_acls_filters(request: &DeleteAclsRequest) -> Vec<Result<AclBindingFilter, String>> {
    request
        .filters
        .iter()
        .map(|f| {
            AclBindingFilter::from_codes(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect()
}

/// The Kafka response from the filters as parsed and the controller's `answer` for the `Ok`
/// ones, in their order: per filter the bindings it removed (Kafka's DeleteAcls shape).
pub fn delete_acls_response(filters: &[Result<AclBindingFilter, String>], answer: Option<Vec<AclDeleteResult>>) -> DeleteAclsResponse {
    let mut answered = answer.map(Vec::into_iter);
    let results = filters
        .iter()
        .map(|filter| match filter {
            Err(message) => filter_result(Some((ErrorCode::InvalidRequest, message.clone())), &[]),
            Ok(_) => match answered.as_mut().map(Iterator::next) {
                Some(Some(AclDeleteResult { error: None, deleted })) => filter_result(None, &deleted),
                Some(Some(AclDeleteResult { error: Some(e), .. })) => filter_result(Some((e.code(), e.to_string())), &[]),
                Some(None) | None => filter_result(Some(no_controller()), &[]),
            },
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

fn filter_result(error: Option<(ErrorCode, String)>, deleted: &[AclBinding]) -> DeleteAclsFilterResult {
    let matching = deleted
        .iter()
        .map(|b| {
            DeleteAclsMatchingAcl::default()
                .with_error_message(None)
                .with_resource_type(b.resource_type.code())
                .with_resource_name(s(b.resource_name.clone()))
                .with_pattern_type(b.pattern_type.code())
                .with_principal(s(b.principal.clone()))
                .with_host(s(b.host.clone()))
                .with_operation(b.operation.code())
                .with_permission_type(b.permission.code())
        })
        .collect();
    let result = DeleteAclsFilterResult::default().with_error_message(None).with_matching_acls(matching);
    match error {
        None => result,
        Some((code, message)) => result.with_error_code(code.code()).with_error_message(Some(s(message))),
    }
}

/// DeleteAcls refused whole (SECURITY_DISABLED), every filter answered with `error`.
pub fn delete_acls_refused(request: &DeleteAclsRequest, error: ErrorCode, message: &str) -> DeleteAclsResponse {
    let results = request.filters.iter().map(|_| filter_result(Some((error, message.to_owned())), &[])).collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

/// Whether `acls` shows what the controller answered: every binding it accepted is there and
/// every binding it deleted is gone. The broker answers once its own image does, so a
/// DescribeAcls to it right after sees the change.
pub fn acl_changes_applied(acls: &Acls, created: &[&AclBinding], deleted: &[&AclBinding]) -> bool {
    let present = |b: &AclBinding| acls.matching(&AclBindingFilter::exact(b)).next().is_some();
    created.iter().all(|b| present(b)) && deleted.iter().all(|b| !present(b))
}

/// The bindings a CreateAcls answer says were stored: the `Ok` ones the controller accepted.
pub fn created_bindings<'a>(bindings: &'a [Result<AclBinding, String>], answer: &[AclCreateResult]) -> Vec<&'a AclBinding> {
    bindings.iter().filter_map(|b| b.as_ref().ok()).zip(answer).filter(|(_, r)| r.error.is_none()).map(|(b, _)| b).collect()
}

/// DescribeAcls from `acls` (Kafka's `AclApis.handleDescribeAcls`): the bindings the filter
/// selects, grouped by resource (type, name, pattern type), each resource with its entries.
/// An invalid filter is INVALID_REQUEST for the whole request, as it is in Kafka.
pub fn describe_acls(acls: &Acls, request: &DescribeAclsRequest) -> DescribeAclsResponse {
    let filter = AclBindingFilter::from_codes(
        request.resource_type_filter,
        request.resource_name_filter.as_deref(),
        request.pattern_type_filter,
        request.principal_filter.as_deref(),
        request.host_filter.as_deref(),
        request.operation,
        request.permission_type,
    );
    let filter = match filter {
        Ok(filter) => filter,
        Err(message) => return describe_acls_refused(ErrorCode::InvalidRequest, &message),
    };
    // `Acls` iterates in resource order, so each resource's bindings are one run.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    let mut current: Option<(&AclBinding, Vec<AclDescription>)> = None;
    for b in acls.matching(&filter) {
        let same = current.as_ref().is_some_and(|(first, _)| {
            (first.resource_type, &first.resource_name, first.pattern_type) == (b.resource_type, &b.resource_name, b.pattern_type)
        });
        if !same {
            resources.extend(current.take().map(|(first, entries)| resource(first, entries)));
            current = Some((b, Vec::new()));
        }
        let (_, entries) = current.as_mut().expect("a resource is open");
        entries.push(
            AclDescription::default()
                .with_principal(s(b.principal.clone()))
                .with_host(s(b.host.clone()))
                .with_operation(b.operation.code())
                .with_permission_type(b.permission.code()),
        );
    }
    resources.extend(current.map(|(first, entries)| resource(first, entries)));
    DescribeAclsResponse::default().with_error_message(None).with_resources(resources)
}

fn resource(first: &AclBinding, entries: Vec<AclDescription>) -> DescribeAclsResource {
    DescribeAclsResource::default()
        .with_resource_type(first.resource_type.code())
        .with_resource_name(s(first.resource_name.clone()))
        .with_pattern_type(first.pattern_type.code())
        .with_acls(entries)
}

/// DescribeAcls refused whole.
pub fn describe_acls_refused(error: ErrorCode, message: &str) -> DescribeAclsResponse {
    DescribeAclsResponse::default().with_error_code(error.code()).with_error_message(Some(s(message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Operation, PatternType, Permission, ResourceType};
    use crate::controller::ControllerError;
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;

    fn binding(resource_type: ResourceType, name: &str, pattern_type: PatternType, principal: &str, operation: Operation) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission: Permission::Allow,
        }
    }

    fn acls() -> Acls {
        let mut acls = Acls::default();
        for b in [
            binding(ResourceType::Topic, "orders", PatternType::Literal, "User:bob", Operation::Write),
            binding(ResourceType::Group, "g", PatternType::Literal, "User:alice", Operation::Read),
            binding(ResourceType::Topic, "orders", PatternType::Literal, "User:alice", Operation::Read),
            binding(ResourceType::Topic, "orders", PatternType::Prefixed, "User:alice", Operation::Read),
        ] {
            acls.add(b);
        }
        acls
    }

    fn describe(resource_type: i8, name: Option<&str>, pattern_type: i8) -> DescribeAclsRequest {
        DescribeAclsRequest::default()
            .with_resource_type_filter(resource_type)
            .with_resource_name_filter(name.map(s))
            .with_pattern_type_filter(pattern_type)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1)
    }

    fn shape(response: &DescribeAclsResponse) -> Vec<(i8, String, i8, Vec<String>)> {
        response
            .resources
            .iter()
            .map(|r| {
                let entries = r.acls.iter().map(|a| format!("{}/{}/{}", a.principal.as_str(), a.operation, a.permission_type)).collect();
                (r.resource_type, r.resource_name.to_string(), r.pattern_type, entries)
            })
            .collect()
    }

    // Guards DescribeAcls' response shape: one entry per resource pattern, its ACLs under it,
    // in a stable order, the filter's pattern type respected.
    #[test]
    fn describe_groups_bindings_by_resource() {
        let any = describe(1, None, 1);
        assert_eq!(
            shape(&describe_acls(&acls(), &any)),
            vec![
                (2, "orders".into(), 3, vec!["User:alice/3/3".into(), "User:bob/4/3".into()]),
                (2, "orders".into(), 4, vec!["User:alice/3/3".into()]),
                (3, "g".into(), 3, vec!["User:alice/3/3".into()]),
            ]
        );
        let prefixed_orders = describe(2, Some("orders"), 4);
        assert_eq!(shape(&describe_acls(&acls(), &prefixed_orders)), vec![(2, "orders".into(), 4, vec!["User:alice/3/3".into()])]);
        let matching = describe(2, Some("orders-eu"), 2);
        assert_eq!(shape(&describe_acls(&acls(), &matching)), vec![(2, "orders".into(), 4, vec!["User:alice/3/3".into()])]);
        let unknown = describe_acls(&acls(), &describe(0, None, 1));
        assert_eq!(unknown.error_code, ErrorCode::InvalidRequest.code());
        assert!(unknown.resources.is_empty());
    }

    // Guards the merge of local refusals with the controller's answers: results stay in request
    // order, one per creation or filter, whichever side decided it.
    #[test]
    fn local_refusals_and_controller_answers_merge_in_request_order() {
        let creation = |resource_type: i8, name: &str| {
            AclCreation::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_resource_pattern_type(3)
                .with_principal(s("User:alice"))
                .with_host(s("*"))
                .with_operation(3)
                .with_permission_type(3)
        };
        let request = CreateAclsRequest::default().with_creations(vec![creation(2, "a"), creation(1, "b"), creation(2, "c")]);
        let bindings = create_acls_bindings(&request);
        assert_eq!(bindings[1], Err("Invalid resourceType ANY".to_string()));
        let answer = vec![
            AclCreateResult { error: None },
            AclCreateResult { error: Some(ControllerError::Invalid("nope".into())) },
        ];
        assert_eq!(created_bindings(&bindings, &answer).len(), 1);
        let response = create_acls_response(&bindings, Some(answer));
        let codes: Vec<(i16, Option<String>)> =
            response.results.iter().map(|r| (r.error_code, r.error_message.as_ref().map(|m| m.to_string()))).collect();
        assert_eq!(
            codes,
            vec![(0, None), (42, Some("Invalid resourceType ANY".into())), (42, Some("nope".into()))]
        );
        let timed_out = create_acls_response(&bindings, None);
        assert_eq!(timed_out.results[0].error_code, ErrorCode::RequestTimedOut.code());

        let filter = |pattern: i8| {
            DeleteAclsFilter::default()
                .with_resource_type_filter(1)
                .with_resource_name_filter(None)
                .with_pattern_type_filter(pattern)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1)
        };
        let request = DeleteAclsRequest::default().with_filters(vec![filter(0), filter(3)]);
        let filters = delete_acls_filters(&request);
        assert_eq!(filters[0], Err("Unknown patternFilter.".to_string()));
        let gone = binding(ResourceType::Topic, "t", PatternType::Literal, "User:a", Operation::Read);
        let response = delete_acls_response(&filters, Some(vec![AclDeleteResult { error: None, deleted: vec![gone.clone()] }]));
        assert_eq!(response.filter_results[0].error_code, 42);
        assert_eq!(response.filter_results[1].error_code, 0);
        let matched = &response.filter_results[1].matching_acls;
        assert_eq!(matched.len(), 1);
        assert_eq!((matched[0].resource_name.as_str(), matched[0].pattern_type, matched[0].operation), ("t", 3, 3));
        assert!(acl_changes_applied(&Acls::default(), &[], &[&gone]));
        assert!(!acl_changes_applied(&Acls::default(), &[&gone], &[]));
    }
}
