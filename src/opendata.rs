//! WeChat open data: decrypting `encryptedData` and checking legacy `rawData` signatures.
//!
//! Facts this relies on (`shared/wechat.md`): AES-128-CBC with the user's session_key and
//! the `iv`, strict PKCS#7 padding, a JSON plaintext with `watermark.appid`. Padding must be
//! checked strictly: a lenient unpadding (WxJava, wechatpy) turns a wrong key into garbage
//! instead of an error, and a wrong key is the usual case in the field (a newer `wx.login`
//! replaced the session_key).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use aws_lc_rs::digest;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value};

use crate::domain::{PhoneNumber, Profile};

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// Why open data could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenDataError {
    /// Not base64, or a key, iv or ciphertext of the wrong length: the client's fault.
    #[error("{0}")]
    Malformed(String),
    /// The padding or the JSON is wrong under the stored session key: nearly always a newer
    /// `wx.login` replaced the key at WeChat, or the data was fetched before logging in.
    #[error(
        "the data does not decrypt with the session key of your latest login: call wx.login, \
         POST /v1/login, then fetch the data again and retry"
    )]
    Stale,
    /// The data was encrypted for another app.
    #[error("the data's watermark names app {found:?}, not {expected:?}")]
    WatermarkMismatch {
        /// The app the user logged in through.
        expected: String,
        /// The app in the watermark.
        found: String,
    },
}

/// Decodes base64 as mini-programs send it: a `+` that travelled through a form or a query
/// string arrives as a space. Spaces become `+` before anything is trimmed, so a value that
/// starts or ends with one keeps it; only the line breaks a copy-paste adds are trimmed.
fn base64(what: &str, text: &str) -> Result<Vec<u8>, OpenDataError> {
    STANDARD
        .decode(text.replace(' ', "+").trim_matches(['\r', '\n']))
        .map_err(|_| OpenDataError::Malformed(format!("{what} is not base64")))
}

/// Decrypts `encrypted_data` with the user's `session_key` and checks that its watermark
/// names `appid`. Returns the plaintext object without its watermark.
pub fn decrypt(
    session_key: &str,
    iv: &str,
    encrypted_data: &str,
    appid: &str,
) -> Result<Map<String, Value>, OpenDataError> {
    let iv = base64("iv", iv)?;
    let data = base64("encrypted_data", encrypted_data)?;
    if iv.len() != 16 {
        return Err(OpenDataError::Malformed(format!("iv must decode to 16 bytes, got {}", iv.len())));
    }
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(OpenDataError::Malformed(format!(
            "encrypted_data must decode to a non-empty multiple of 16 bytes, got {}",
            data.len()
        )));
    }
    // A stored key that is not 16 bytes of base64 cannot decrypt anything: the same
    // recovery (log in again) applies.
    let key = base64("session_key", session_key).map_err(|_| OpenDataError::Stale)?;
    let cipher = Aes128CbcDec::new_from_slices(&key, &iv).map_err(|_| OpenDataError::Stale)?;
    let plain = cipher.decrypt_padded_vec_mut::<Pkcs7>(&data).map_err(|_| OpenDataError::Stale)?;
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&plain) else {
        return Err(OpenDataError::Stale);
    };
    let found = object.get("watermark").and_then(|w| w.get("appid")).and_then(Value::as_str).map(str::to_owned);
    match found {
        Some(found) if found == appid => {
            object.remove("watermark");
            Ok(object)
        }
        Some(found) => Err(OpenDataError::WatermarkMismatch { expected: appid.into(), found }),
        // Decrypted, but not WeChat's envelope: garbage under the wrong key, as likely as not.
        None => Err(OpenDataError::Stale),
    }
}

/// The phone number in decrypted `getPhoneNumber` data, or in the `phone_info` of
/// `getuserphonenumber`: `phoneNumber`, `purePhoneNumber` and `countryCode` (a string or a
/// number in practice). `None` when the object holds no phone number.
pub fn phone(object: &Map<String, Value>) -> Option<PhoneNumber> {
    let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
    let country_code = match object.get("countryCode")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(PhoneNumber { phone_number: text("phoneNumber")?, pure_phone_number: text("purePhoneNumber")?, country_code })
}

/// The profile in decrypted `getUserInfo` data. Missing fields are empty (WeChat sends
/// placeholders since 2022); `None` when the object has neither `nickName` nor
/// `avatarUrl`, i.e. is not a profile at all.
pub fn profile(object: &Map<String, Value>) -> Option<Profile> {
    if !object.contains_key("nickName") && !object.contains_key("avatarUrl") {
        return None;
    }
    let text = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let gender = match object.get("gender") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Some(Profile {
        nickname: text("nickName"),
        avatar_url: text("avatarUrl"),
        gender: gender.filter(|g| *g <= 2).and_then(|g| u8::try_from(g).ok()).unwrap_or(0),
        country: text("country"),
        province: text("province"),
        city: text("city"),
        language: text("language"),
    })
}

/// `hex(sha1(raw_data + session_key))`: the signature WeChat puts beside legacy `rawData`.
pub fn raw_data_signature(raw_data: &str, session_key: &str) -> String {
    let mut input = String::with_capacity(raw_data.len() + session_key.len());
    input.push_str(raw_data);
    input.push_str(session_key);
    let digest = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, input.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `signature` is [`raw_data_signature`] of `raw_data`, compared in constant time.
pub fn raw_data_signature_matches(raw_data: &str, session_key: &str, signature: &str) -> bool {
    let expected = raw_data_signature(raw_data, session_key);
    let equal = aws_lc_rs::constant_time::verify_slices_are_equal(
        expected.as_bytes(),
        signature.trim().to_ascii_lowercase().as_bytes(),
    );
    equal.is_ok()
}

/// Encrypts `plaintext` as WeChat does, with a random iv: `(encryptedData, iv)` in base64.
/// Only dev mode's mock uses it; production only ever decrypts.
pub fn encrypt(session_key: &str, plaintext: &str) -> Result<(String, String), OpenDataError> {
    let key = base64("session_key", session_key)?;
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| OpenDataError::Malformed("no randomness".into()))?;
    let cipher = Aes128CbcEnc::new_from_slices(&key, &iv)
        .map_err(|_| OpenDataError::Malformed("session_key must decode to 16 bytes".into()))?;
    let data = cipher.encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
    Ok((STANDARD.encode(data), STANDARD.encode(iv)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPID: &str = "wx4f4bc4dec97d474b";
    const KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const DATA: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
    const PLAIN: &str = r#"{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0","unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA","watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}"#;

    #[test]
    fn wechats_official_vector_decrypts_to_the_exact_plaintext() {
        let mut expected: Map<String, Value> = serde_json::from_str(PLAIN).unwrap();
        expected.remove("watermark");
        assert_eq!(decrypt(KEY, IV, DATA, APPID).unwrap(), expected);
        // Exactly: the raw plaintext, padding removed strictly.
        let raw = Aes128CbcDec::new_from_slices(&STANDARD.decode(KEY).unwrap(), &STANDARD.decode(IV).unwrap())
            .unwrap()
            .decrypt_padded_vec_mut::<Pkcs7>(&STANDARD.decode(DATA).unwrap())
            .unwrap();
        assert_eq!(raw, PLAIN.as_bytes());
    }

    #[test]
    fn wxjavas_negative_vector_is_stale_not_garbage() {
        let data = "BY6VOgcWbwGcyrunK0ECWI8rnDsT69DucZ+M78tc1aL9aM/3bEAHFYd4fu7kRjWhD4YfjObw44T9vUqKyHIjbKs6hvtEasZZEIW35x4a91xVgN48ZqZ7MTQqUlP13kDUlkuwYh+/8g8yceu4kNbjowYrhihx+SV7CfjKCveJ7TSepr5Z7aLv1o+rfeelfOwn++WN/YoQsuZ6S3L4fWlWe5DAAUnFUI6cJvxxCohVzbrVXhyH2AqQdSjH2WnMYFeaGFIbcoxMznlk7oEwFn+hBj63dyT/swdYQfEdzuyCBmKXy8d6l1RKVX6Y65coTD8kIlbr+FKsqYrXVUIUBSwehqYuOdhYWZ9Bntl5DWU1oqzAPCnMn2cAIoQpQPKP7IGSxMOvCNAMhVXbE7BvnWuVuGF+AM5tXAa9IVUhcMImGwLQqm4iV5uBd+5OcFObh3A4VJk9iBCBWSkBHa/rV9CVoY0bFv2F9/2Hv82++Ybl274=";
        assert_eq!(
            decrypt("7MG7jbTToVVRWRXVA885rg==", "TarMFjnzHVxy8pdS93wQbw==", data, APPID),
            Err(OpenDataError::Stale)
        );
        // The official data under another user's key is stale too.
        assert_eq!(decrypt("AAAAAAAAAAAAAAAAAAAAAA==", IV, DATA, APPID), Err(OpenDataError::Stale));
    }

    #[test]
    fn what_encrypt_produces_decrypts_and_fresh_ivs_differ() {
        let plain = r#"{"purePhoneNumber":"13800138000","watermark":{"appid":"wx4f4bc4dec97d474b"}}"#;
        let (data, iv) = encrypt(KEY, plain).unwrap();
        let (again, other_iv) = encrypt(KEY, plain).unwrap();
        assert_ne!((&data, &iv), (&again, &other_iv));
        assert_eq!(decrypt(KEY, &iv, &data, APPID).unwrap()["purePhoneNumber"], "13800138000");
    }

    #[test]
    fn a_plus_turned_into_a_space_still_decrypts() {
        assert!(decrypt(KEY, IV, &DATA.replace('+', " "), APPID).is_ok());
    }

    #[test]
    fn another_apps_watermark_is_refused() {
        let err = decrypt(KEY, IV, DATA, "wx0000000000000000").unwrap_err();
        assert_eq!(
            err,
            OpenDataError::WatermarkMismatch { expected: "wx0000000000000000".into(), found: APPID.into() }
        );
    }

    #[test]
    fn bad_base64_and_lengths_are_malformed() {
        for (iv, data, what) in [
            ("!!!", DATA, "iv not base64"),
            ("AAAA", DATA, "short iv"),
            (IV, "not base64!", "data not base64"),
            (IV, "AAAA", "data not a multiple of 16"),
            (IV, "", "empty data"),
        ] {
            assert!(matches!(decrypt(KEY, iv, data, APPID), Err(OpenDataError::Malformed(_))), "{what}");
        }
    }

    #[test]
    fn the_official_vector_holds_a_profile_and_no_phone_number() {
        let object = decrypt(KEY, IV, DATA, APPID).unwrap();
        let profile = profile(&object).unwrap();
        assert_eq!((profile.nickname.as_str(), profile.gender, profile.city.as_str()), ("Band", 1, "Guangzhou"));
        assert!(profile.avatar_url.starts_with("http://wx.qlogo.cn/"));
        assert_eq!(phone(&object), None);
    }

    #[test]
    fn a_profile_needs_a_nickname_or_an_avatar_and_reads_gender_as_number_or_string() {
        let read = |value: serde_json::Value| profile(value.as_object().unwrap());
        let nickname_only = read(serde_json::json!({"nickName": "微信用户", "gender": "2"})).unwrap();
        assert_eq!((nickname_only.nickname.as_str(), nickname_only.gender), ("微信用户", 2));
        assert_eq!(nickname_only.avatar_url, "");
        let avatar_only = read(serde_json::json!({"avatarUrl": "https://thirdwx.qlogo.cn/x", "gender": 7})).unwrap();
        assert_eq!(avatar_only.gender, 0, "a gender WeChat does not define");
        assert_eq!(read(serde_json::json!({"gender": 1, "city": "Guangzhou"})), None);
    }

    #[test]
    fn a_country_code_may_be_a_string_or_a_number() {
        for code in [serde_json::json!("86"), serde_json::json!(86)] {
            let object = serde_json::json!({
                "phoneNumber": "+8613800138000", "purePhoneNumber": "13800138000", "countryCode": code
            });
            let phone = phone(object.as_object().unwrap()).unwrap();
            assert_eq!(phone.country_code, "86");
            assert_eq!(profile(object.as_object().unwrap()), None);
        }
    }

    #[test]
    fn the_raw_data_signature_vector_matches_and_a_changed_one_does_not() {
        let raw = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}"#;
        let key = "HyVFkGl5F5OQWJZZaNzBBg==";
        assert!(raw_data_signature_matches(raw, key, "75e81ceda165f4ffa64f4068af58c64b8f54b88c"));
        assert!(!raw_data_signature_matches(raw, key, "75e81ceda165f4ffa64f4068af58c64b8f54b88d"));
        assert!(!raw_data_signature_matches(
            &raw.replace("Band", "Bond"),
            key,
            "75e81ceda165f4ffa64f4068af58c64b8f54b88c"
        ));
    }
}
