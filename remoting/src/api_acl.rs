//! ACL 2.0 requests on [`MqClientApi`] (`MQClientAPIImpl`'s auth calls): users and access
//! control lists on one broker, with RocketMQ's header names (`username`, `filter`, `subject`,
//! `policyType`, `resource`, `subjectFilter`, `resourceFilter`) and `UserInfo` / `AclInfo`
//! JSON bodies. The admin CLI writes through these; the proxy reads users and ACLs with them.

use rocketraft_common::acl::{AclInfo, UserInfo};

use crate::api::{ApiError, MqClientApi};
use crate::codes::{request_code, response_code};
use crate::RemotingCommand;

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Malformed(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Malformed(format!("{what} is not valid JSON: {e}")))
}

impl MqClientApi {
    async fn acl_call(&self, broker: &str, request: RemotingCommand) -> Result<Vec<u8>, ApiError> {
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        Ok(response.body.to_vec())
    }

    /// AUTH_CREATE_USER.
    pub async fn create_user(&self, broker: &str, user: &UserInfo) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::AUTH_CREATE_USER)
            .with_ext("username", user.username.clone())
            .with_body(json(user)?);
        self.acl_call(broker, request).await.map(drop)
    }

    /// AUTH_UPDATE_USER: changes the fields that are `Some`.
    pub async fn update_user(&self, broker: &str, user: &UserInfo) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::AUTH_UPDATE_USER)
            .with_ext("username", user.username.clone())
            .with_body(json(user)?);
        self.acl_call(broker, request).await.map(drop)
    }

    /// AUTH_DELETE_USER (the user's ACL goes too).
    pub async fn delete_user(&self, broker: &str, username: &str) -> Result<(), ApiError> {
        let request =
            RemotingCommand::request(request_code::AUTH_DELETE_USER).with_ext("username", username);
        self.acl_call(broker, request).await.map(drop)
    }

    /// AUTH_GET_USER: `None` when the broker answers USER_NOT_EXIST.
    pub async fn get_user(
        &self,
        broker: &str,
        username: &str,
    ) -> Result<Option<UserInfo>, ApiError> {
        let request =
            RemotingCommand::request(request_code::AUTH_GET_USER).with_ext("username", username);
        match self.acl_call(broker, request).await {
            Ok(body) if body.is_empty() => Ok(None),
            Ok(body) => parse("the user", &body).map(Some),
            Err(e) if e.code() == Some(response_code::USER_NOT_EXIST) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// AUTH_LIST_USER: users whose name contains `filter`.
    pub async fn list_users(
        &self,
        broker: &str,
        filter: Option<&str>,
    ) -> Result<Vec<UserInfo>, ApiError> {
        let mut request = RemotingCommand::request(request_code::AUTH_LIST_USER);
        if let Some(f) = filter {
            request = request.with_ext("filter", f);
        }
        let body = self.acl_call(broker, request).await?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        parse("the user list", &body)
    }

    /// AUTH_CREATE_ACL: merges `acl`'s entries into the subject's ACL.
    pub async fn create_acl(&self, broker: &str, acl: &AclInfo) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::AUTH_CREATE_ACL)
            .with_ext("subject", acl.subject.clone())
            .with_body(json(acl)?);
        self.acl_call(broker, request).await.map(drop)
    }

    /// AUTH_UPDATE_ACL: as create (entries for the same resource are replaced).
    pub async fn update_acl(&self, broker: &str, acl: &AclInfo) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::AUTH_UPDATE_ACL)
            .with_ext("subject", acl.subject.clone())
            .with_body(json(acl)?);
        self.acl_call(broker, request).await.map(drop)
    }

    /// AUTH_DELETE_ACL: the entries for `resource` (of `policy_type`, or every policy), or the
    /// whole ACL without a resource.
    pub async fn delete_acl(
        &self,
        broker: &str,
        subject: &str,
        policy_type: Option<&str>,
        resource: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut request =
            RemotingCommand::request(request_code::AUTH_DELETE_ACL).with_ext("subject", subject);
        if let Some(p) = policy_type {
            request = request.with_ext("policyType", p);
        }
        if let Some(r) = resource {
            request = request.with_ext("resource", r);
        }
        self.acl_call(broker, request).await.map(drop)
    }

    /// AUTH_GET_ACL: `None` when the broker answers POLICY_NOT_EXIST.
    pub async fn get_acl(&self, broker: &str, subject: &str) -> Result<Option<AclInfo>, ApiError> {
        let request =
            RemotingCommand::request(request_code::AUTH_GET_ACL).with_ext("subject", subject);
        match self.acl_call(broker, request).await {
            Ok(body) if body.is_empty() => Ok(None),
            Ok(body) => parse("the ACL", &body).map(Some),
            Err(e) if e.code() == Some(response_code::POLICY_NOT_EXIST) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// AUTH_LIST_ACL: ACLs whose subject contains `subject_filter`, keeping entries whose
    /// resource contains `resource_filter`.
    pub async fn list_acls(
        &self,
        broker: &str,
        subject_filter: Option<&str>,
        resource_filter: Option<&str>,
    ) -> Result<Vec<AclInfo>, ApiError> {
        let mut request = RemotingCommand::request(request_code::AUTH_LIST_ACL);
        if let Some(f) = subject_filter {
            request = request.with_ext("subjectFilter", f);
        }
        if let Some(f) = resource_filter {
            request = request.with_ext("resourceFilter", f);
        }
        let body = self.acl_call(broker, request).await?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        parse("the ACL list", &body)
    }
}
