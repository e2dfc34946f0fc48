//! `/v1/secrets/*`: the secret store (see [`crate::secrets`]), on the control socket only.

use super::{endpoint, Peer, Shared};
use axum::Router;
use ecrl::api::secrets::*;
use ecrl::api::Empty;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router = endpoint::<PutSecret, _, _>(router, |s: Shared, _: Peer, r| async move {
        let (secret, created) = s.secrets.put(&r.name, &r.value).await?;
        tracing::info!(secret = %secret.name, created, "secret stored");
        Ok(PutSecretResponse { secret, created })
    });
    let router = endpoint::<GetSecret, _, _>(router, |s: Shared, _: Peer, r| async move {
        s.secrets.get(&r.name)
    });
    let router = endpoint::<ListSecrets, _, _>(router, |s: Shared, _: Peer, _: Empty| async move {
        Ok(ListSecretsResponse {
            secret_list: s.secrets.list(),
        })
    });
    endpoint::<DeleteSecret, _, _>(router, |s: Shared, _: Peer, r| async move {
        let secret = s.secrets.delete(&r.name).await?;
        tracing::info!(secret = %secret.name, "secret deleted");
        Ok(secret)
    })
}
