//! HMAC signatures of webhook pushes, GitHub or Stripe style (ADR 65): the body (Stripe:
//! `<t>.<body>`) signed with a shared secret, compared in constant time; Stripe's time
//! bounds replays.

use crds::adapter::{HmacAlgorithm, SignatureStyle, WebhookSignature};
use hmac::{Hmac, Mac};

/// A push's signature check, with the secret read at start.
#[derive(Clone)]
pub struct Verifier {
    header: String,
    style: SignatureStyle,
    algorithm: HmacAlgorithm,
    secret: Vec<u8>,
    tolerance_seconds: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("header", &self.header)
            .field("style", &self.style)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a push's signature was refused (answered 401).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the push carries no {0} header")]
    Missing(String),
    #[error("the {0} header is not a {1} signature")]
    Malformed(String, &'static str),
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the push was signed {0} s away from now, outside the {1} s tolerance: a replay")]
    Replay(i64, u64),
}

impl Verifier {
    pub fn new(spec: &WebhookSignature, secret: String) -> Self {
        Verifier {
            header: spec.header.clone(),
            style: spec.style,
            algorithm: spec.algorithm,
            secret: secret.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
            tolerance_seconds: u64::from(spec.tolerance_seconds),
        }
    }

    /// The header the signature is read from.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Checks `value` (the header's, if present) against `body`, at `now` (unix seconds).
    pub fn verify(&self, value: Option<&str>, body: &[u8], now: i64) -> Result<(), Refused> {
        let value = value.ok_or_else(|| Refused::Missing(self.header.clone()))?;
        match self.style {
            SignatureStyle::Github => {
                let prefix = match self.algorithm {
                    HmacAlgorithm::Sha256 => "sha256=",
                    HmacAlgorithm::Sha512 => "sha512=",
                };
                let hex = value
                    .trim()
                    .strip_prefix(prefix)
                    .ok_or_else(|| Refused::Malformed(self.header.clone(), "github"))?;
                let given = hex::decode(hex)
                    .map_err(|_| Refused::Malformed(self.header.clone(), "github"))?;
                self.check(&[body], &given)
            }
            SignatureStyle::Stripe => {
                let mut time = None;
                let mut signatures = Vec::new();
                for part in value.split(',').map(str::trim) {
                    match part.split_once('=') {
                        Some(("t", t)) => time = t.parse::<i64>().ok(),
                        Some(("v1", hex)) => signatures.extend(hex::decode(hex).ok()),
                        _ => {}
                    }
                }
                let (Some(time), false) = (time, signatures.is_empty()) else {
                    return Err(Refused::Malformed(self.header.clone(), "stripe"));
                };
                let skew = now - time;
                if skew.unsigned_abs() > self.tolerance_seconds {
                    return Err(Refused::Replay(skew, self.tolerance_seconds));
                }
                let stamp = time.to_string();
                let signed: [&[u8]; 3] = [stamp.as_bytes(), b".", body];
                // Stripe lists one v1 per active secret while one is rolled: any may match.
                if signatures
                    .iter()
                    .any(|given| self.check(&signed, given).is_ok())
                {
                    Ok(())
                } else {
                    Err(Refused::Mismatch)
                }
            }
        }
    }

    /// Whether the HMAC of `parts` is `given`, compared in constant time.
    fn check(&self, parts: &[&[u8]], given: &[u8]) -> Result<(), Refused> {
        fn verify<M: Mac + hmac::digest::KeyInit>(
            secret: &[u8],
            parts: &[&[u8]],
            given: &[u8],
        ) -> bool {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
                .expect("HMAC takes a key of any length");
            for part in parts {
                mac.update(part);
            }
            mac.verify_slice(given).is_ok()
        }
        let matches = match self.algorithm {
            HmacAlgorithm::Sha256 => verify::<Hmac<sha2::Sha256>>(&self.secret, parts, given),
            HmacAlgorithm::Sha512 => verify::<Hmac<sha2::Sha512>>(&self.secret, parts, given),
        };
        if matches {
            Ok(())
        } else {
            Err(Refused::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(style: SignatureStyle, algorithm: HmacAlgorithm) -> WebhookSignature {
        WebhookSignature {
            header: "X-Signature".to_owned(),
            style,
            algorithm,
            secret_ref: crds::SecretKeyRef {
                name: "hook".to_owned(),
                key: "secret".to_owned(),
            },
            tolerance_seconds: 300,
        }
    }

    fn sign(algorithm: HmacAlgorithm, secret: &[u8], message: &[u8]) -> String {
        match algorithm {
            HmacAlgorithm::Sha256 => {
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
                mac.update(message);
                hex::encode(mac.finalize().into_bytes())
            }
            HmacAlgorithm::Sha512 => {
                let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret).unwrap();
                mac.update(message);
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    #[test]
    fn a_github_signature_of_the_body_is_accepted_and_any_other_refused() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let verifier = Verifier::new(
            &spec(SignatureStyle::Github, HmacAlgorithm::Sha256),
            "It's a Secret to Everybody\n".to_owned(),
        );
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verifier.verify(Some(good), b"Hello, World!", 0), Ok(()));
        assert_eq!(
            verifier.verify(Some(good), b"Hello, World?", 0),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verifier.verify(None, b"Hello, World!", 0),
            Err(Refused::Missing("X-Signature".to_owned()))
        );
        assert!(matches!(
            verifier.verify(Some("md5=abc"), b"Hello, World!", 0),
            Err(Refused::Malformed(..))
        ));
        let sha512 = Verifier::new(
            &spec(SignatureStyle::Github, HmacAlgorithm::Sha512),
            "k".to_owned(),
        );
        let header = format!("sha512={}", sign(HmacAlgorithm::Sha512, b"k", b"body"));
        assert_eq!(sha512.verify(Some(&header), b"body", 0), Ok(()));
    }

    #[test]
    fn a_stripe_signature_is_bounded_in_time_against_replays() {
        let verifier = Verifier::new(
            &spec(SignatureStyle::Stripe, HmacAlgorithm::Sha256),
            "whsec".to_owned(),
        );
        let body = br#"{"id":"c1"}"#;
        let t = 1_700_000_000_i64;
        let signed = [t.to_string().as_bytes(), b".", body].concat();
        let header = format!(
            "t={t},v1={},v1=00",
            sign(HmacAlgorithm::Sha256, b"whsec", &signed)
        );
        assert_eq!(verifier.verify(Some(&header), body, t + 299), Ok(()));
        assert_eq!(
            verifier.verify(Some(&header), body, t + 301),
            Err(Refused::Replay(301, 300))
        );
        assert_eq!(
            verifier.verify(Some(&header), b"{}", t),
            Err(Refused::Mismatch)
        );
        // A replayed body with a fresh time but the old signature does not match.
        let moved = header.replace(&t.to_string(), &(t + 1000).to_string());
        assert_eq!(
            verifier.verify(Some(&moved), body, t + 1000),
            Err(Refused::Mismatch)
        );
        assert!(matches!(
            verifier.verify(Some("v1=abcd"), body, t),
            Err(Refused::Malformed(..))
        ));
    }
}
