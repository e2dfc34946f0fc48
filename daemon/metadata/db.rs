//! The metadata database behind one interface: SQLite, the embedded default, or PostgreSQL,
//! which several ecrld instances share. The rest of the module writes its SQL once, in the
//! dialect both understand (`?N` placeholders, `ON CONFLICT ... DO UPDATE`, `"user"` quoted),
//! binds rusqlite values and reads rows through [`Row::get`] into rusqlite types; for
//! PostgreSQL this module rewrites the placeholders and converts values both ways by the
//! column and parameter types the server reports.
//!
//! It owns no schema (see `schema`) and must not call storage, the registry or the network
//! beyond the database's own connection.

use postgres::types::{IsNull, Type};
use rusqlite::types::{FromSql, ToSql, ToSqlOutput, Value, ValueRef};
use std::cell::RefCell;
use std::collections::HashMap;

pub type Result<T> = rusqlite::Result<T>;

/// A connection to the metadata database. Used by one thread at a time (the writer, or the
/// start-up load before it runs).
pub enum Db {
    Sqlite(rusqlite::Connection),
    Pg(Box<Pg>),
}

/// A PostgreSQL connection with its prepared statements (the writer repeats the same few
/// statements thousands of times: each is parsed by the server once).
pub struct Pg {
    client: RefCell<postgres::Client>,
    statements: RefCell<HashMap<&'static str, postgres::Statement>>,
}

impl Pg {
    pub fn new(client: postgres::Client) -> Pg {
        Pg {
            client: RefCell::new(client),
            statements: RefCell::default(),
        }
    }

    pub fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        self.client.borrow_mut()
    }

    fn statement(&self, sql: &'static str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .borrow_mut()
            .prepare(&translate(sql))
            .map_err(pg_error)?;
        self.statements.borrow_mut().insert(sql, s.clone());
        Ok(s)
    }

    fn run(&self, sql: &'static str, args: &[&dyn ToSql]) -> Result<usize> {
        if is_transaction_control(sql) {
            self.client
                .borrow_mut()
                .batch_execute(&translate(sql))
                .map_err(pg_error)?;
            return Ok(0);
        }
        let statement = self.statement(sql)?;
        let values = pg_values(args)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.client
            .borrow_mut()
            .execute(&statement, &refs)
            .map(|n| n as usize)
            .map_err(pg_error)
    }

    fn query(&self, sql: &'static str, args: &[&dyn ToSql]) -> Result<Vec<postgres::Row>> {
        let statement = self.statement(sql)?;
        let values = pg_values(args)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.client
            .borrow_mut()
            .query(&statement, &refs)
            .map_err(pg_error)
    }
}

/// A PostgreSQL error as the error type the module's SQL code speaks (rusqlite's), keeping
/// the server's message (a `DbError` shows only its code through `Display`).
pub fn pg_error(e: postgres::Error) -> rusqlite::Error {
    let message = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {}", db.message()),
        None => format!("PostgreSQL: {e}"),
    };
    rusqlite::Error::ToSqlConversionFailure(message.into())
}

fn is_transaction_control(sql: &str) -> bool {
    let head = sql.split_whitespace().next().unwrap_or("");
    ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"]
        .iter()
        .any(|k| head.eq_ignore_ascii_case(k))
}

/// The module's SQL in PostgreSQL's dialect: `?N` (and bare `?`) become `$N`, outside string
/// literals and quoted names; `BEGIN IMMEDIATE` (SQLite's writer lock) is a plain `BEGIN`.
pub fn translate(sql: &str) -> String {
    let trimmed = sql.trim();
    if trimmed.eq_ignore_ascii_case("BEGIN IMMEDIATE") {
        return "BEGIN".into();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut next_bare = 1;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next_bare.to_string());
                    next_bare += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// Statement arguments: `params![...]`, an array of values, or `[]`.
pub trait Args {
    fn values(&self) -> Vec<&dyn ToSql>;
}

impl Args for &[&dyn ToSql] {
    fn values(&self) -> Vec<&dyn ToSql> {
        self.to_vec()
    }
}

impl Args for [&(dyn ToSql + Send + Sync); 0] {
    fn values(&self) -> Vec<&dyn ToSql> {
        Vec::new()
    }
}

macro_rules! array_args {
    ($($n:literal)*) => {$(
        impl<T: ToSql> Args for [T; $n] {
            fn values(&self) -> Vec<&dyn ToSql> {
                self.iter().map(|v| v as &dyn ToSql).collect()
            }
        }
    )*};
}
array_args!(1 2 3 4 5 6);

impl Db {
    /// Runs one statement (prepared once per connection); the rows it changed.
    pub fn execute(&self, sql: &'static str, args: impl Args) -> Result<usize> {
        match self {
            Db::Sqlite(c) => c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args.values())),
            Db::Pg(pg) => pg.run(sql, &args.values()),
        }
    }

    /// Runs statements with no arguments and no rows, one after the other.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(c) => c.execute_batch(sql),
            Db::Pg(pg) => pg
                .client
                .borrow_mut()
                .batch_execute(&translate(sql))
                .map_err(pg_error),
        }
    }

    /// A statement to run (once, or for each of many rows).
    pub fn prepare(&self, sql: &'static str) -> Result<Stmt<'_>> {
        match self {
            Db::Sqlite(c) => Ok(Stmt::Sqlite(c.prepare_cached(sql)?)),
            Db::Pg(pg) => Ok(Stmt::Pg(pg, sql)),
        }
    }

    /// The same as [`Db::prepare`] (both backends keep statements prepared).
    pub fn prepare_cached(&self, sql: &'static str) -> Result<Stmt<'_>> {
        self.prepare(sql)
    }

    /// The first row of a query, through `f`; `QueryReturnedNoRows` when there is none.
    pub fn query_row<T>(
        &self,
        sql: &'static str,
        args: impl Args,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare(sql)?.query_row(args, f)
    }
}

/// A prepared statement of either backend.
pub enum Stmt<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Pg(&'c Pg, &'static str),
}

impl Stmt<'_> {
    pub fn execute(&mut self, args: impl Args) -> Result<usize> {
        match self {
            Stmt::Sqlite(s) => s.execute(rusqlite::params_from_iter(args.values())),
            Stmt::Pg(pg, sql) => pg.run(sql, &args.values()),
        }
    }

    pub fn query_row<T>(
        &mut self,
        args: impl Args,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            Stmt::Sqlite(s) => s.query_row(rusqlite::params_from_iter(args.values()), |r| {
                f(&Row::Sqlite(r))
            }),
            Stmt::Pg(pg, sql) => {
                let rows = pg.query(sql, &args.values())?;
                match rows.first() {
                    Some(row) => f(&Row::Pg(row)),
                    None => Err(rusqlite::Error::QueryReturnedNoRows),
                }
            }
        }
    }

    /// Every row of a query, each through `f`.
    pub fn query_map<T>(
        &mut self,
        args: impl Args,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        match self {
            Stmt::Sqlite(s) => {
                let rows = s.query_map(rusqlite::params_from_iter(args.values()), |r| {
                    f(&Row::Sqlite(r))
                })?;
                Ok(rows.collect::<Vec<_>>().into_iter())
            }
            Stmt::Pg(pg, sql) => {
                let rows = pg.query(sql, &args.values())?;
                Ok(rows
                    .iter()
                    .map(|row| f(&Row::Pg(row)))
                    .collect::<Vec<_>>()
                    .into_iter())
            }
        }
    }
}

/// A row of either backend.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

/// A column index (only numbers: the module's queries name their columns in order).
pub trait ColumnIndex {
    fn index(&self) -> usize;
}

impl ColumnIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

impl Row<'_> {
    /// Column `i` as a rusqlite type, whichever backend the row came from.
    pub fn get<I: ColumnIndex, T: FromSql>(&self, i: I) -> Result<T> {
        let i = i.index();
        match self {
            Row::Sqlite(r) => r.get(i),
            Row::Pg(r) => {
                let value = pg_column(r, i)?;
                T::column_result(ValueRef::from(&value)).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e))
                })
            }
        }
    }
}

/// A PostgreSQL column as the SQLite value it stands for (the schemas map BIGINT to INTEGER,
/// TEXT to TEXT, BYTEA to BLOB).
fn pg_column(row: &postgres::Row, i: usize) -> Result<Value> {
    let Some(column) = row.columns().get(i) else {
        return Err(rusqlite::Error::InvalidColumnIndex(i));
    };
    let ty = column.type_().clone();
    let get_err = |e: postgres::Error| pg_error(e);
    let value = match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(get_err)?
            .map(Value::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(get_err)?
            .map(|v| Value::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(get_err)?
            .map(|v| Value::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(get_err)?
            .map(|v| Value::Integer(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(get_err)?
            .map(Value::Real),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(get_err)?
            .map(Value::Blob),
        _ => row
            .try_get::<_, Option<String>>(i)
            .map_err(get_err)?
            .map(Value::Text),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// rusqlite arguments as values PostgreSQL takes.
fn pg_values(args: &[&dyn ToSql]) -> Result<Vec<PgValue>> {
    args.iter()
        .map(|a| {
            let value = match a.to_sql()? {
                ToSqlOutput::Borrowed(v) => Value::from(v),
                ToSqlOutput::Owned(v) => v,
                _ => {
                    return Err(rusqlite::Error::ToSqlConversionFailure(
                        "an argument kind PostgreSQL does not take".into(),
                    ))
                }
            };
            Ok(PgValue(value))
        })
        .collect()
}

/// SQLite values as PostgreSQL parameters (each converted to the parameter's type).
pub fn pg_values_of(values: Vec<Value>) -> Vec<impl postgres::types::ToSql + Sync> {
    values.into_iter().map(PgValue).collect()
}

/// A SQLite value bound to a PostgreSQL parameter of whatever type the server inferred.
#[derive(Debug)]
struct PgValue(Value);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn put<T: postgres::types::ToSql>(
    value: T,
    ty: &Type,
    out: &mut bytes::BytesMut,
) -> std::result::Result<IsNull, BoxError> {
    value.to_sql(ty, out)
}

impl postgres::types::ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, BoxError> {
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => put(i, ty, out),
                Type::INT4 => put(i32::try_from(*i)?, ty, out),
                Type::INT2 => put(i16::try_from(*i)?, ty, out),
                Type::BOOL => put(*i != 0, ty, out),
                Type::FLOAT8 => put(*i as f64, ty, out),
                _ => put(i.to_string().as_str(), ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT4 => put(*f as f32, ty, out),
                _ => put(f, ty, out),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => put(s.parse::<i64>()?, ty, out),
                Type::INT4 => put(s.parse::<i32>()?, ty, out),
                Type::BYTEA => put(s.as_bytes(), ty, out),
                _ => put(s.as_str(), ty, out),
            },
            Value::Blob(b) => put(b.as_slice(), ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn placeholders_become_numbered_outside_quotes() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
        assert_eq!(
            translate("VALUES (?, ?, '?', \"?x\")"),
            "VALUES ($1, $2, '?', \"?x\")"
        );
        assert_eq!(translate("  BEGIN IMMEDIATE "), "BEGIN");
    }
}
