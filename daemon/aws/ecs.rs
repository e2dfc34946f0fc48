//! ECS's operations (`AmazonEC2ContainerServiceV20141113.<Op>`), each calling the same
//! function the control API calls for it.

use super::{unsupported, AwsError, Out};
use crate::auth::Principal;
use crate::registry::Shared;
use serde_json::Value;

pub(super) async fn call(
    _state: &Shared,
    _principal: &Principal,
    op: &str,
    _input: &Value,
) -> Result<Out, AwsError> {
    Err(unsupported("ECS", op))
}
