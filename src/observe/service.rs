//! The HTTP probe of a plain `Service` (a gateway, a pm2 app): `GET url` answers the expected
//! status within the timeout. Only the status line and headers are waited for; the body is
//! never read, so a service with a slow or huge body is judged by its status alone.

use std::time::Duration;

use crate::desired::ServiceSpec;
use crate::observe::driver::millis;
use crate::observe::http::{Http, Method, Request};
use crate::observe::snapshot::{ProbeFailure, Reach, ServiceObservation};

/// One probe attempt. `default_timeout` is the cluster's probe timeout, used when the probe
/// declares none. `failed_attempts` is 0 or 1 (the observer sets the final value).
pub async fn probe_service(
    spec: &ServiceSpec,
    http: &Http,
    default_timeout: Duration,
) -> ServiceObservation {
    let timeout = spec.probe.timeout.map(|t| t.get()).unwrap_or(default_timeout);
    let req =
        Request { method: Method::Get, url: &spec.probe.url, body: None, auth: None, timeout };
    match http.status_only(req).await {
        Ok((status, latency)) if status == spec.probe.expected_status => ServiceObservation {
            reach: Reach::Up,
            failed_attempts: 0,
            latency_ms: Some(millis(latency)),
        },
        Ok((status, latency)) => ServiceObservation {
            reach: Reach::Down { cause: ProbeFailure::Http { status } },
            failed_attempts: 1,
            latency_ms: Some(millis(latency)),
        },
        Err(cause) => ServiceObservation {
            reach: Reach::Down { cause },
            failed_attempts: 1,
            latency_ms: None,
        },
    }
}
