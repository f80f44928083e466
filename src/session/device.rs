//! Device management: what a User-Agent says about a device, and renaming a session.

use serde::Serialize;

use super::audit::{AuditKind, Meta};
use super::list::SessionView;
use super::SessionService;
use crate::domain::{SessionId, UserId};
use crate::error::{Error, Result};

/// Longest name `PATCH /v1/sessions/{id}` accepts, in Unicode scalar values.
pub const MAX_RENAME_LEN: usize = 64;

/// What kind of device a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    Desktop,
    Mobile,
    Tablet,
    Other,
}

/// Browser, OS and device type from a User-Agent; each `None` when it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    pub browser: Option<String>,
    pub os: Option<String>,
    pub device_type: Option<DeviceType>,
}

const UNKNOWN: &str = "UNKNOWN";

fn known(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty() && value != UNKNOWN).then_some(value)
}

impl DeviceInfo {
    pub fn from_user_agent(user_agent: Option<&str>) -> Self {
        let Some(ua) = user_agent.map(str::trim).filter(|ua| !ua.is_empty()) else {
            return DeviceInfo::default();
        };
        let Some(r) = woothee::parser::Parser::new().parse(ua) else {
            return DeviceInfo::default();
        };
        // "Chrome 131", not "Chrome 131.0.0.0": the major version is what a person recognises.
        let browser = known(r.name).map(|name| match known(r.version).and_then(|v| v.split('.').next()) {
            Some(major) if !major.is_empty() => format!("{name} {major}"),
            _ => name.to_string(),
        });
        let os = known(r.os).map(|os| {
            let version = known(&r.os_version);
            match os {
                // woothee already names the release ("Windows 10"); its version is the NT number.
                _ if os.starts_with("Windows") => os.to_string(),
                "iPhone" | "iPad" | "iPod" => version.map_or("iOS".into(), |v| format!("iOS {v}")),
                "Mac OSX" => version.map_or("macOS".into(), |v| format!("macOS {v}")),
                _ => version.map_or(os.to_string(), |v| format!("{os} {v}")),
            }
        });
        // woothee files tablets under "smartphone": an iPad, or an Android
        // browser without "Mobile" in its UA (Google's own rule for Android tablets).
        let tablet = r.os == "iPad" || ua.contains("Tablet") || (r.os == "Android" && !ua.contains("Mobile"));
        let device_type = match r.category {
            _ if tablet => Some(DeviceType::Tablet),
            "pc" => Some(DeviceType::Desktop),
            "smartphone" | "mobilephone" => Some(DeviceType::Mobile),
            "appliance" | "crawler" | "misc" => Some(DeviceType::Other),
            _ => None,
        };
        DeviceInfo {
            browser,
            os,
            device_type,
        }
    }
}

/// A device name as `PATCH /v1/sessions/{id}` accepts it: trimmed, 1–64
/// scalar values, no control characters.
pub fn parse_device_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 || len > MAX_RENAME_LEN {
        return Err(Error::InvalidRequest(format!(
            "device_name must be 1 to {MAX_RENAME_LEN} characters after trimming"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(
            "device_name must not contain control characters".into(),
        ));
    }
    Ok(name.to_string())
}

impl SessionService {
    /// Renames one of `user`'s live sessions; `NotFound` for anyone else's.
    pub async fn rename_session(
        &self,
        user: UserId,
        current: SessionId,
        id: SessionId,
        raw_name: &str,
        meta: &Meta,
    ) -> Result<SessionView> {
        let name = parse_device_name(raw_name)?;
        let now = self.clock.now();
        let renamed = self.store.rename_session(id, user, &name, now).await?;
        let session = renamed.ok_or(Error::NotFound("session"))?;
        self.audit(AuditKind::SessionRenamed, Some(user), Some(id), None, meta)
            .await;
        Ok(SessionView::from_record(session, Some(current)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ua: &str) -> DeviceInfo {
        DeviceInfo::from_user_agent(Some(ua))
    }

    #[test]
    fn desktop_chrome_on_windows() {
        let d = info("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36");
        assert_eq!(d.browser.as_deref(), Some("Chrome 131"));
        assert_eq!(d.os.as_deref(), Some("Windows 10"));
        assert_eq!(d.device_type, Some(DeviceType::Desktop));
    }

    #[test]
    fn phones_and_tablets() {
        let iphone = info("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1");
        assert_eq!(iphone.device_type, Some(DeviceType::Mobile));
        assert_eq!(iphone.browser.as_deref(), Some("Safari 17"));
        let ipad = info("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1");
        assert_eq!(ipad.device_type, Some(DeviceType::Tablet));
        let android_phone = info("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36");
        assert_eq!(android_phone.device_type, Some(DeviceType::Mobile));
        assert_eq!(android_phone.os.as_deref(), Some("Android 14"));
        let android_tablet = info("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36");
        assert_eq!(android_tablet.device_type, Some(DeviceType::Tablet));
    }

    #[test]
    fn nothing_said_is_null() {
        assert_eq!(DeviceInfo::from_user_agent(None), DeviceInfo::default());
        assert_eq!(info(""), DeviceInfo::default());
        assert_eq!(info("curl-ish/0 nonsense"), DeviceInfo::default());
    }

    #[test]
    fn device_names() {
        assert_eq!(parse_device_name("  Work laptop ").ok().as_deref(), Some("Work laptop"));
        assert!(parse_device_name("   ").is_err());
        assert!(parse_device_name(&"é".repeat(64)).is_ok());
        assert!(parse_device_name(&"é".repeat(65)).is_err());
        assert!(parse_device_name("tab\there").is_err());
        assert!(parse_device_name("nul\u{0}").is_err());
        assert!(parse_device_name("del\u{7f}").is_err());
        assert!(parse_device_name("c1\u{85}x").is_err());
    }
}
