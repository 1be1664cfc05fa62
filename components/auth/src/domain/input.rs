//! Validated inputs of `auth` (emails and names are `platform::input`'s).

use crate::error::Error;

/// A new password: 8 to 128 characters.
pub struct NewPassword(String);

impl NewPassword {
    /// Checks the length rules.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let n = raw.chars().count();
        if n < 8 {
            return Err(Error::Invalid(
                "password must be at least 8 characters".into(),
            ));
        }
        if n > 128 {
            return Err(Error::Invalid(
                "password must be at most 128 characters".into(),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// The password.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_have_length_rules() {
        assert!(NewPassword::parse("short").is_err());
        assert!(NewPassword::parse(&"x".repeat(129)).is_err());
        assert!(NewPassword::parse("long enough").is_ok());
    }
}
