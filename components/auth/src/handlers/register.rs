//! `POST /register`: creates the profile in `user` (service chaining), then
//! the credentials here. `user` answers a create for an email it already holds
//! with the existing profile's id, so a retry after a failure between the two
//! steps completes the registration, and of two concurrent registrations of
//! one email the credentials' unique index lets exactly one win.

use crate::domain::input::{DisplayName, Email, NewPassword};
use crate::domain::password;
use crate::error::Error;
use crate::repo;
use platform::http::Ctx;
use serde::Deserialize;
use spin_sdk::http::{Request, Response};
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    email: String,
    password: String,
    display_name: String,
}

/// Registers a user.
pub async fn post(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    let body: Body = platform::http::body(req)?;
    let email = Email::parse(&body.email)?;
    let password = NewPassword::parse(&body.password)?;
    let name = DisplayName::parse(&body.display_name)?;
    let db = platform::db::Db::open()?;
    if repo::email_registered(&db, &email)? {
        return Err(Error::EmailTaken);
    }
    let hash = password::hash(password.as_str())
        .map_err(|e| Error::Problem(platform::Problem::internal(e)))?;
    let user_id = create_profile(ctx, Uuid::new_v4(), &email, &name).await?;
    repo::insert_credentials(&db, user_id, &email, &hash)?;
    Ok(platform::http::json(
        201,
        &serde_json::json!({"id": user_id, "email": email.as_str(), "display_name": name.as_str()}),
    ))
}

/// Asks `user` to create the profile; returns the id it holds for this email.
async fn create_profile(
    ctx: &Ctx,
    id: Uuid,
    email: &Email,
    name: &DisplayName,
) -> Result<Uuid, Error> {
    let token = platform::var("internal_token")?;
    let body =
        serde_json::json!({"id": id, "email": email.as_str(), "display_name": name.as_str()});
    let req = spin_sdk::http::Request::post(
        "http://user.spin.internal/api/v1/user/internal/users",
        body.to_string(),
    )
    .header("content-type", "application/json")
    .header("x-internal-token", token)
    .header("x-request-id", ctx.request_id.clone())
    .build();
    let resp: Response = spin_sdk::http::send(req)
        .await
        .map_err(|e| Error::Upstream(format!("user: {e}")))?;
    match *resp.status() {
        200 | 201 => {
            #[derive(Deserialize)]
            struct Created {
                id: Uuid,
            }
            let created: Created = serde_json::from_slice(resp.body())
                .map_err(|e| Error::Upstream(format!("user: bad response: {e}")))?;
            Ok(created.id)
        }
        409 => Err(Error::EmailTaken),
        s => Err(Error::Upstream(format!(
            "user answered {s}: {}",
            String::from_utf8_lossy(resp.body())
        ))),
    }
}
