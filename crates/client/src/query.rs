//! The query language: `POST /devices/query`, one page or all of them.

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::Value;
use twinhub_protocol::rest::QuerySpecification;

use crate::{ClientError, ServiceClient, read_json};

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The rows: twins, device-job records or projections.
    pub items: Vec<Value>,
    /// `x-ms-item-type`: `twin`, `deviceJob`, `raw`, ...
    pub item_type: Option<String>,
    /// The token for the next page; `None` on the last page.
    pub continuation: Option<String>,
}

impl ServiceClient {
    /// One page of `query`'s results, of at most `page_size` rows (the hub's default when
    /// `None`), starting at `continuation` (from the previous page).
    pub async fn query_page(
        &self,
        query: &str,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<QueryPage, ClientError> {
        let spec = QuerySpecification {
            query: query.to_owned(),
        };
        let mut request = self
            .request(Method::POST, &["devices", "query"], &[])?
            .json(&spec);
        if let Some(size) = page_size {
            request = request.header("x-ms-max-item-count", size.to_string());
        }
        if let Some(token) = continuation {
            let token = HeaderValue::from_str(token).map_err(|_| {
                ClientError::InvalidArgument("the continuation token is not header-safe".to_owned())
            })?;
            request = request.header("x-ms-continuation", token);
        }
        let response = Self::execute(request).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let item_type = header("x-ms-item-type");
        let continuation = header("x-ms-continuation");
        let items = read_json(response).await?;
        Ok(QueryPage {
            items,
            item_type,
            continuation,
        })
    }

    /// Every row of `query`, fetching page after page.
    pub async fn query_all(&self, query: &str) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .query_page(query, None, continuation.as_deref())
                .await?;
            items.extend(page.items);
            match page.continuation {
                // A hub that hands back the token it was given would otherwise loop forever.
                Some(next) if continuation.as_deref() == Some(next.as_str()) => {
                    return Err(ClientError::UnexpectedResponse(
                        "the query's continuation token did not advance".to_owned(),
                    ));
                }
                Some(next) => continuation = Some(next),
                None => return Ok(items),
            }
        }
    }
}
