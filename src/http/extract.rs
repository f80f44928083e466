//! Extractors that turn requests into typed input or into our error format.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, FORWARDED, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::domain::{ClientRole, MAX_USER_AGENT_LEN};
use crate::error::Error;
use crate::session::audit::Meta;
use crate::session::Authenticated;

enum BodyKind {
    Form,
    Json,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let raw = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Some(BodyKind::Form),
        "application/json" => Some(BodyKind::Json),
        _ => None,
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::InvalidRequest("could not read the request body".into())
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let malformed = |e: serde_json::Error| Error::InvalidRequest(format!("malformed JSON body: {}", short(&e)));
    // serde would read a struct from a JSON array too; bodies are objects.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    if !value.is_object() {
        return Err(Error::InvalidRequest("JSON body must be an object".into()));
    }
    serde_json::from_value(value).map_err(malformed)
}

/// serde's messages may quote input; keep them short and single-line.
fn short(e: &dyn std::fmt::Display) -> String {
    let mut msg = e.to_string().replace(['\n', '\r'], " ");
    if msg.len() > 200 {
        let mut end = 200;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    msg
}

/// An OAuth endpoint body: form-encoded (RFC 6749) or JSON; anything else is 415.
pub struct OAuthBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OAuthBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = body_kind(req.headers()).ok_or(Error::UnsupportedMediaType(
            "application/x-www-form-urlencoded or application/json",
        ))?;
        let bytes = read_body(req, state).await?;
        let value = match kind {
            BodyKind::Form => serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| Error::InvalidRequest(format!("malformed form body: {}", short(&e))))?,
            BodyKind::Json => parse_json(&bytes)?,
        };
        Ok(OAuthBody(value))
    }
}

/// A JSON body, with JSON errors in our format.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !matches!(body_kind(req.headers()), Some(BodyKind::Json)) {
            return Err(Error::UnsupportedMediaType("application/json"));
        }
        let bytes = read_body(req, state).await?;
        Ok(AppJson(parse_json(&bytes)?))
    }
}

/// Where a request came from, for the device list, the audit trail, the
/// limits and the lockouts: one client IP for all of them.
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl ClientInfo {
    pub fn as_user(&self) -> Meta {
        Meta::user(self.ip.clone(), self.user_agent.clone())
    }

    pub fn as_client(&self, client: &str) -> Meta {
        Meta::client(client, self.ip.clone(), self.user_agent.clone())
    }

    pub fn ip_addr(&self) -> Option<IpAddr> {
        self.ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

/// A `Forwarded` (RFC 7239) `for=` value: `192.0.2.1`, `"[2001:db8::1]:4711"`,
/// `"192.0.2.1:80"`; obfuscated identifiers and `unknown` are not addresses.
fn forwarded_for_value(raw: &str) -> Option<IpAddr> {
    let v = raw.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse().ok().or_else(|| v.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The hops a request passed, nearest last, from `X-Forwarded-For` when the
/// request has one, else from `Forwarded`. `None` marks a hop that is not an
/// address (nothing to its left can be believed).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("for=?").split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| forwarded_for_value(value))
        })
        .collect()
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then the rightmost forwarded hop that is not itself a trusted proxy (the
/// ones left of it could be written by anyone). When every hop is trusted
/// the leftmost is the client; when a hop is not an address, the nearest
/// trusted hop is the best we know.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut nearest = peer;
    for hop in forwarded_hops(headers).into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(&ip) => nearest = ip,
            Some(ip) => return ip.to_canonical(),
            None => return nearest,
        }
    }
    nearest
}

/// The TCP peer of this request (present when served by [`crate::app`]).
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical())
}

impl<S> FromRequestParts<S> for ClientInfo
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let user_agent = parts.headers.get(USER_AGENT).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(MAX_USER_AGENT_LEN)
                .collect()
        });
        let ip = peer_ip(parts).map(|peer| client_ip(peer, &parts.headers, &state.trusted_proxies).to_string());
        Ok(ClientInfo { user_agent, ip })
    }
}

fn bearer(parts: &Parts) -> Result<&str, Error> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(Error::InvalidToken("missing bearer token"))?
        .to_str()
        .map_err(|_| Error::InvalidToken("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(Error::InvalidToken("missing bearer token")),
    }
}

/// A request with a valid access token whose session is live.
pub struct AuthUser(pub Authenticated);

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer(parts)?;
        Ok(AuthUser(state.sessions.authenticate(token).await?))
    }
}

fn form_decode(raw: &str) -> String {
    form_urlencoded::parse(format!("v={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A service client from `AUTHD_CLIENTS`, by HTTP Basic (RFC 6749 §2.3.1:
/// id and secret are form-urlencoded before the Basic encoding), that has
/// `role`.
fn authenticate_client(parts: &Parts, state: &AppState, role: ClientRole) -> Result<String, Error> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(Error::InvalidClient)?;
    let (scheme, encoded) = value.split_once(' ').ok_or(Error::InvalidClient)?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return Err(Error::InvalidClient);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| Error::InvalidClient)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Error::InvalidClient)?;
    let (id, secret) = decoded.split_once(':').ok_or(Error::InvalidClient)?;
    // RFC 6749 §2.3.1 says clients form-encode id and secret, but many
    // (curl -u) do not: a secret with `+` or `%` must work either way.
    // Both forms are always checked, each in constant time.
    let decoded = state.clients.verify_client(&form_decode(id), &form_decode(secret));
    let raw = state.clients.verify_client(id, secret);
    let client = decoded.or(raw).ok_or(Error::InvalidClient)?;
    if !client.has_role(role) {
        return Err(Error::MissingRole(role.as_str()));
    }
    Ok(client.id.clone())
}

macro_rules! client_with_role {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        pub struct $name(pub String);

        impl<S> FromRequestParts<S> for $name
        where
            S: Send + Sync,
            AppState: FromRef<S>,
        {
            type Rejection = Error;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
                Ok($name(authenticate_client(parts, &AppState::from_ref(state), $role)?))
            }
        }
    };
}

client_with_role!(
    /// A service client with the `introspect` role (401 unauthenticated, 403 without the role).
    Introspector,
    ClientRole::Introspect
);
client_with_role!(
    /// A service client with the `admin` role.
    AdminClient,
    ClientRole::Admin
);
client_with_role!(
    /// A service client with the `feed` role, for the revocation feed.
    FeedClient,
    ClientRole::Feed
);

/// The `{id}` path segment as text; a segment that is not even valid UTF-8
/// names nothing, so it is "not found" like any unknown id.
pub struct IdSegment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdSegment {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound("resource"))?;
        Ok(IdSegment(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let forged = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.2.2.2")]);
        assert_eq!(client_ip(proxy, &forged, &trusted).to_string(), "198.51.100.7");
        assert_eq!(client_ip(outsider, &forged, &trusted), outsider, "untrusted peer");
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(client_ip(proxy, &forged, &[]), proxy, "no trusted proxies");
        let all_trusted = headers(&[("x-forwarded-for", "10.9.9.9"), ("x-forwarded-for", "10.2.2.2")]);
        assert_eq!(client_ip(proxy, &all_trusted, &trusted).to_string(), "10.9.9.9");
        let garbage = headers(&[("x-forwarded-for", "1.2.3.4, junk, 10.2.2.2")]);
        assert_eq!(client_ip(proxy, &garbage, &trusted).to_string(), "10.2.2.2");
        let fwd = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711";by=10.0.0.1, for=10.3.3.3"#,
        )]);
        assert_eq!(client_ip(proxy, &fwd, &trusted).to_string(), "2001:db8:cafe::17");
        let mapped: IpAddr = "::ffff:10.1.1.1".parse().unwrap();
        assert_eq!(client_ip(mapped, &forged, &trusted).to_string(), "198.51.100.7");
    }
}
