//! The OSS V1 request signature, written from Aliyun's specification.
//!
//! ```text
//! Signature = base64(HMAC-SHA1(AccessKeySecret,
//!     VERB + "\n" + Content-MD5 + "\n" + Content-Type + "\n" + Date + "\n"
//!     + CanonicalizedOSSHeaders + CanonicalizedResource))
//! Authorization: OSS <AccessKeyId>:<Signature>
//! ```
//!
//! `CanonicalizedOSSHeaders`: every header whose lower-cased name starts
//! with `x-oss-`, sorted by name, each as `name:value\n`.
//! `CanonicalizedResource`: `/<bucket>/<object key>` (the key not
//! percent-encoded; `/<bucket>/` for bucket operations), followed by the
//! signed sub-resources from the query, sorted, as `?a=1&b` (a sub-resource
//! without a value has no `=`). Other query parameters are not signed.
//!
//! This is deliberately independent of the signer the backend uses
//! (`reqsign`): the fake must catch a client that signs the wrong thing.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Query parameters that are part of the signed resource (from the OSS
/// documentation of V1 signatures). Everything else in a query is unsigned.
pub const SUB_RESOURCES: &[&str] = &[
    "acl",
    "append",
    "bucketInfo",
    "callback",
    "callback-var",
    "cname",
    "comp",
    "continuation-token",
    "cors",
    "delete",
    "encryption",
    "endTime",
    "img",
    "inventory",
    "inventoryId",
    "lifecycle",
    "live",
    "location",
    "logging",
    "objectMeta",
    "partNumber",
    "policy",
    "position",
    "qos",
    "qosInfo",
    "referer",
    "replication",
    "replicationLocation",
    "replicationProgress",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "security-token",
    "sequential",
    "startTime",
    "stat",
    "status",
    "style",
    "styleName",
    "symlink",
    "tagging",
    "transferAcceleration",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "vod",
    "website",
    "worm",
    "wormExtend",
    "wormId",
    "x-oss-process",
    "x-oss-request-payer",
    "x-oss-traffic-limit",
];

/// What a V1 signature covers, already extracted from a request.
#[derive(Debug, Clone, Default)]
pub struct SignedParts<'a> {
    pub verb: &'a str,
    pub content_md5: &'a str,
    pub content_type: &'a str,
    pub date: &'a str,
    /// All request headers as (name, value); names in any case.
    pub headers: Vec<(&'a str, &'a str)>,
    pub bucket: &'a str,
    /// The object key, decoded; empty for bucket operations.
    pub key: &'a str,
    /// The query as decoded (name, value) pairs, signed or not.
    pub query: Vec<(&'a str, &'a str)>,
}

/// The exact string an OSS client must sign for `parts`.
pub fn string_to_sign(parts: &SignedParts<'_>) -> String {
    let mut s = format!(
        "{}\n{}\n{}\n{}\n",
        parts.verb, parts.content_md5, parts.content_type, parts.date
    );
    let mut oss_headers: Vec<(String, &str)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
        .filter(|(n, _)| n.starts_with("x-oss-"))
        .collect();
    oss_headers.sort();
    for (name, value) in oss_headers {
        s.push_str(&name);
        s.push(':');
        s.push_str(value);
        s.push('\n');
    }
    s.push_str(&canonical_resource(parts.bucket, parts.key, &parts.query));
    s
}

/// `/bucket/key?signed&sub=resources`.
pub fn canonical_resource(bucket: &str, key: &str, query: &[(&str, &str)]) -> String {
    let mut resource = format!("/{bucket}/{key}");
    let mut signed: Vec<(&str, &str)> = query
        .iter()
        .copied()
        .filter(|(n, _)| SUB_RESOURCES.contains(n))
        .collect();
    signed.sort();
    for (i, (name, value)) in signed.iter().enumerate() {
        resource.push(if i == 0 { '?' } else { '&' });
        resource.push_str(name);
        if !value.is_empty() {
            resource.push('=');
            resource.push_str(value);
        }
    }
    resource
}

/// `base64(HMAC-SHA1(secret, string_to_sign))`.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The `Authorization` header value for `parts`.
pub fn authorization(access_key_id: &str, secret: &str, parts: &SignedParts<'_>) -> String {
    format!(
        "OSS {access_key_id}:{}",
        sign(secret, &string_to_sign(parts))
    )
}

/// Splits `OSS <ak>:<signature>`.
pub fn parse_authorization(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix("OSS ")?;
    let (ak, sig) = rest.split_once(':')?;
    if ak.is_empty() || sig.is_empty() {
        return None;
    }
    Some((ak, sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worked example built by hand from the specification: every piece
    /// of the string to sign, in order, for a PUT with a Content-MD5, two
    /// `x-oss-` headers (given out of order and in mixed case), an unsigned
    /// query parameter and a signed sub-resource.
    #[test]
    fn string_to_sign_follows_the_spec() {
        let parts = SignedParts {
            verb: "PUT",
            content_md5: "eB5eJF1ptWaXm4bijSPyxw==",
            content_type: "text/html",
            date: "Wed, 28 Dec 2022 10:27:41 GMT",
            headers: vec![
                ("X-OSS-Meta-Author", "alice"),
                ("x-oss-magic", " abracadabra "),
                ("Content-Type", "text/html"),
            ],
            bucket: "examplebucket",
            key: "nelson",
            query: vec![("max-keys", "10"), ("acl", "")],
        };
        let expected = "PUT\n\
            eB5eJF1ptWaXm4bijSPyxw==\n\
            text/html\n\
            Wed, 28 Dec 2022 10:27:41 GMT\n\
            x-oss-magic:abracadabra\n\
            x-oss-meta-author:alice\n\
            /examplebucket/nelson?acl";
        assert_eq!(string_to_sign(&parts), expected);
    }

    /// HMAC-SHA1 and base64 checked against RFC 2202's test case 2
    /// (key "Jefe", data "what do ya want for nothing?").
    #[test]
    fn sign_is_base64_hmac_sha1() {
        // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79 in base64:
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn bucket_resource_and_multiple_sub_resources() {
        assert_eq!(canonical_resource("b", "", &[]), "/b/");
        assert_eq!(
            canonical_resource(
                "b",
                "dir/x y.png",
                &[("uploadId", "abc"), ("partNumber", "2"), ("prefix", "p")]
            ),
            "/b/dir/x y.png?partNumber=2&uploadId=abc"
        );
    }

    #[test]
    fn parses_authorization() {
        assert_eq!(parse_authorization("OSS ak:c2ln"), Some(("ak", "c2ln")));
        assert_eq!(parse_authorization("OSS ak:"), None);
        assert_eq!(parse_authorization("AWS ak:sig"), None);
    }
}
