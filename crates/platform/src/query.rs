//! Building parameterized `WHERE` clauses: values always travel as
//! parameters (`$n`), never inside the SQL text, and a caller's data scope
//! ([`access::RowFilter`]) becomes a clause on the resource's tenant,
//! department and owner columns.

use access::RowFilter;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// The columns a resource's data scope is evaluated on.
#[derive(Debug, Clone, Copy)]
pub struct ScopeColumns {
    /// The tenant column.
    pub tenant: &'static str,
    /// The department column, if rows belong to departments.
    pub department: Option<&'static str>,
    /// The owner column, if rows have an owner.
    pub owner: Option<&'static str>,
}

/// A conjunction of conditions with their parameters.
#[derive(Debug, Default)]
pub struct Where {
    clauses: Vec<String>,
    params: Vec<P>,
}

impl Where {
    /// An empty filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter and returns its placeholder (`$n`).
    pub fn bind(&mut self, value: P) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// Adds a condition (built from column names and placeholders only).
    pub fn and(&mut self, clause: impl Into<String>) {
        self.clauses.push(clause.into());
    }

    /// `col = value`.
    pub fn eq(&mut self, col: &str, value: P) {
        let p = self.bind(value);
        self.and(format!("{col} = {p}"));
    }

    /// `col IS NOT DISTINCT FROM tenant` (a missing tenant is `IS NULL`).
    pub fn tenant_is(&mut self, col: &str, tenant: Option<Uuid>) {
        match tenant {
            Some(t) => self.eq(col, P::Uuid(t.to_string())),
            None => self.and(format!("{col} IS NULL")),
        }
    }

    /// `col = ANY(ids)` for uuid columns.
    pub fn uuid_in(&mut self, col: &str, ids: &[Uuid]) -> String {
        let p = self.bind(P::ArrayStr(
            ids.iter().map(|i| Some(i.to_string())).collect(),
        ));
        format!("{col} = ANY({p}::text[]::uuid[])")
    }

    /// A case-insensitive substring match on any of `cols`.
    pub fn search(&mut self, cols: &[&str], needle: &str) {
        let escaped: String = needle
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let p = self.bind(P::Str(format!("%{}%", escaped.to_lowercase())));
        let ors: Vec<String> = cols
            .iter()
            .map(|c| format!("lower({c}) LIKE {p}"))
            .collect();
        self.and(format!("({})", ors.join(" OR ")));
    }

    /// Restricts rows to a caller's data scope.
    pub fn scope(&mut self, filter: &RowFilter, cols: ScopeColumns) {
        match filter {
            RowFilter::All => {}
            RowFilter::Tenant(t) => self.tenant_is(cols.tenant, *t),
            RowFilter::Departments {
                tenant,
                departments,
                owner,
            } => {
                self.tenant_is(cols.tenant, *tenant);
                let mut ors = Vec::new();
                if let Some(o) = cols.owner {
                    let p = self.bind(P::Uuid(owner.to_string()));
                    ors.push(format!("{o} = {p}"));
                }
                if let Some(d) = cols.department {
                    if !departments.is_empty() {
                        ors.push(self.uuid_in(d, departments));
                    }
                }
                if ors.is_empty() {
                    self.and("false");
                } else {
                    self.and(format!("({})", ors.join(" OR ")));
                }
            }
            RowFilter::Own { tenant, owner } => {
                self.tenant_is(cols.tenant, *tenant);
                match cols.owner {
                    Some(o) => self.eq(o, P::Uuid(owner.to_string())),
                    None => self.and("false"),
                }
            }
        }
    }

    /// ` WHERE a AND b` (empty when there is no condition).
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The parameters, in placeholder order.
    pub fn params(&self) -> &[P] {
        &self.params
    }

    /// The parameters plus LIMIT/OFFSET placeholders for a page: returns the
    /// ` LIMIT $n OFFSET $m` suffix.
    pub fn page(&mut self, page: crate::http::Page) -> String {
        let l = self.bind(P::Int64(page.per_page));
        let o = self.bind(P::Int64(page.offset()));
        format!(" LIMIT {l} OFFSET {o}")
    }
}

/// A page of rows and the total: `SELECT count(*) FROM <count_from>` and
/// `<select> <where> ORDER BY <order> LIMIT .. OFFSET ..` under the same
/// filter (`select` may join what the count does not need).
pub fn paged<T>(
    db: &crate::db::Db,
    select: &str,
    count_from: &str,
    mut w: Where,
    order: &str,
    page: crate::http::Page,
    decode: impl Fn(&[spin_sdk::pg4::DbValue]) -> Result<T, crate::db::DbError>,
) -> Result<(Vec<T>, i64), crate::db::DbError> {
    let counted = db.query(
        &format!("SELECT count(*) FROM {count_from}{}", w.sql()),
        w.params(),
    )?;
    let total: i64 = crate::db::col(&counted.rows[0], 0, "count")?;
    let limit = w.page(page);
    let items = db.all(
        &format!("{select}{} ORDER BY {order}{limit}", w.sql()),
        w.params(),
        decode,
    )?;
    Ok((items, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: ScopeColumns = ScopeColumns {
        tenant: "t",
        department: Some("d"),
        owner: Some("o"),
    };

    #[test]
    fn scopes_become_clauses_with_parameters_only() {
        let tenant = Some(Uuid::from_u128(1));
        let owner = Uuid::from_u128(2);
        let mut w = Where::new();
        w.scope(
            &RowFilter::Departments {
                tenant,
                departments: vec![Uuid::from_u128(3)],
                owner,
            },
            COLS,
        );
        assert_eq!(
            w.sql(),
            " WHERE t = $1 AND (o = $2 OR d = ANY($3::text[]::uuid[]))"
        );
        assert_eq!(w.params().len(), 3);

        let mut w = Where::new();
        w.scope(
            &RowFilter::Own {
                tenant: None,
                owner,
            },
            COLS,
        );
        assert_eq!(w.sql(), " WHERE t IS NULL AND o = $1");

        let mut w = Where::new();
        w.scope(&RowFilter::All, COLS);
        assert_eq!(w.sql(), "");
    }

    #[test]
    fn search_escapes_like_wildcards() {
        let mut w = Where::new();
        w.search(&["email", "name"], "50%_A");
        assert_eq!(
            w.sql(),
            " WHERE (lower(email) LIKE $1 OR lower(name) LIKE $1)"
        );
        assert!(matches!(&w.params()[0], P::Str(s) if s == "%50\\%\\_a%"));
    }
}
