//! `fermyon:spin/redis@2.0.0` (outbound Redis) on the `redis` crate. One
//! multiplexed connection per component and address is shared by all of that
//! component's instances.

use crate::bindings::fermyon::spin2_0_0::redis::{self as r, Error, RedisParameter, RedisResult};
use crate::state::State;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use std::collections::HashMap;
use tokio::sync::Mutex;
use wasmtime::component::Resource;

/// Connections of one component, by address.
#[derive(Default)]
pub struct RedisPool {
    conns: Mutex<HashMap<String, MultiplexedConnection>>,
}

/// The host side of a guest's Redis `connection` resource.
pub struct RedisConnection(MultiplexedConnection);

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

impl r::Host for State {}

impl r::HostConnection for State {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, Error>> {
        if self.component.policy.check_url(&address).is_err() {
            return Ok(Err(Error::InvalidAddress));
        }
        let mut conns = self.component.redis.conns.lock().await;
        let conn = match conns.get(&address) {
            Some(c) => c.clone(),
            None => {
                let client = match redis::Client::open(address.as_str()) {
                    Ok(c) => c,
                    Err(_) => return Ok(Err(Error::InvalidAddress)),
                };
                match client.get_multiplexed_async_connection().await {
                    Ok(c) => {
                        conns.insert(address, c.clone());
                        c
                    }
                    Err(e) => return Ok(Err(other(e))),
                }
            }
        };
        Ok(Ok(self.table.push(RedisConnection(conn))?))
    }

    async fn publish(
        &mut self,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.publish::<_, _, i64>(channel, payload)
            .await
            .map(|_| ())
            .map_err(other))
    }

    async fn get(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.get::<_, Option<Vec<u8>>>(key).await.map_err(other))
    }

    async fn set(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.set::<_, _, ()>(key, value).await.map_err(other))
    }

    async fn incr(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.incr::<_, _, i64>(key, 1)
            .await
            .map_err(|e| match e.kind() {
                redis::ErrorKind::TypeError | redis::ErrorKind::ResponseError => Error::TypeError,
                _ => other(e),
            }))
    }

    async fn del(
        &mut self,
        this: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.del::<_, u32>(keys).await.map_err(other))
    }

    async fn sadd(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.sadd::<_, _, u32>(key, values).await.map_err(other))
    }

    async fn smembers(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.smembers::<_, Vec<String>>(key).await.map_err(other))
    }

    async fn srem(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        Ok(c.srem::<_, _, u32>(key, values).await.map_err(other))
    }

    async fn execute(
        &mut self,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, Error>> {
        let mut c = self.table.get(&this)?.0.clone();
        let mut cmd = redis::cmd(&command);
        for a in arguments {
            match a {
                RedisParameter::Int64(i) => cmd.arg(i),
                RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        Ok(cmd
            .query_async::<Value>(&mut c)
            .await
            .map_err(other)
            .map(|v| {
                let mut out = Vec::new();
                flatten(v, &mut out);
                out
            }))
    }

    async fn drop(&mut self, this: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

fn flatten(v: Value, out: &mut Vec<RedisResult>) {
    match v {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(i) => out.push(RedisResult::Int64(i)),
        Value::BulkString(b) => out.push(RedisResult::Binary(b)),
        Value::SimpleString(s) => out.push(RedisResult::Status(s)),
        Value::Okay => out.push(RedisResult::Status("OK".into())),
        Value::Array(items) | Value::Set(items) => items.into_iter().for_each(|i| flatten(i, out)),
        other => out.push(RedisResult::Binary(format!("{other:?}").into_bytes())),
    }
}
