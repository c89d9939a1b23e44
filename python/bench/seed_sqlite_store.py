"""The custom SQLite token store of Zoho's "custom token persistence" guide, as Python SDK
users write it: the logic of the SDK's DBStore (zohocrmsdk/src/com/zoho/api/authenticator/
store/db_store.py) on sqlite3, with the SQL built by string concatenation as the guide's
sample does, one connection per call and a commit per write.

It exists only as the benchmark's baseline and reproduces the pattern's defects on purpose
(a quote in a value breaks the SQL; no index but the primary key, so every lookup but by id
scans the table). One change: ids are ``max(CAST(id AS INTEGER)) + 1``, where DBStore's
``max(id) + 1`` on a varchar column makes the 11th insert collide with id "10" and fail, so
the store could never reach the 10,000 tokens measured.
"""

import sqlite3

from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.token_store import TokenStore
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

COLUMNS = (
    "id", "user_name", "client_id", "client_secret", "refresh_token", "access_token",
    "grant_token", "expiry_time", "redirect_url", "api_domain",
)


def q(value):
    return "NULL" if value is None else "'" + str(value) + "'"


class SeedSQLiteStore(TokenStore):
    def __init__(self, path):
        self.path = path
        conn = sqlite3.connect(self.path)
        conn.execute(
            "create table if not exists oauthtoken(id varchar(10) primary key, user_name varchar(255),"
            " client_id varchar(255), client_secret varchar(255), refresh_token varchar(255),"
            " access_token varchar(255), grant_token varchar(255), expiry_time varchar(20),"
            " redirect_url varchar(255), api_domain varchar(255))"
        )
        conn.commit()
        conn.close()

    def _where(self, t):
        sig = t.get_user_signature()
        if sig is not None and sig.get_name():
            return "user_name=" + q(sig.get_name())
        if t.get_access_token() is not None and t.get_client_id() is None and t.get_client_secret() is None:
            return "access_token=" + q(t.get_access_token())
        if (t.get_refresh_token() or t.get_grant_token()) and t.get_client_id() is not None \
                and t.get_client_secret() is not None:
            if t.get_grant_token():
                return "grant_token=" + q(t.get_grant_token())
            return "refresh_token=" + q(t.get_refresh_token())
        return None

    def find_token(self, token):
        if not isinstance(token, OAuthToken):
            return token
        conn = sqlite3.connect(self.path)
        try:
            query = "select * from oauthtoken"
            where = self._where(token)
            if where is not None:
                query += " where " + where
            row = conn.execute(query + " limit 1").fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        self._merge(token, row)
        return token

    def save_token(self, token):
        if not isinstance(token, OAuthToken):
            return
        conn = sqlite3.connect(self.path)
        try:
            sets = []
            sig = token.get_user_signature()
            if sig is not None and sig.get_name():
                sets.append("user_name=" + q(sig.get_name()))
            for column, value in (
                ("api_domain", token.get_api_domain()), ("client_id", token.get_client_id()),
                ("client_secret", token.get_client_secret()), ("refresh_token", token.get_refresh_token()),
                ("access_token", token.get_access_token()), ("grant_token", token.get_grant_token()),
                ("expiry_time", token.get_expires_in()), ("redirect_url", token.get_redirect_url()),
            ):
                if value is not None:
                    sets.append(column + "=" + q(value))
            where = self._where(token)
            updated = 0
            if where is not None:
                updated = conn.execute("update oauthtoken set " + ",".join(sets) + " where " + where).rowcount
            if updated <= 0:
                if token.get_id() is None:
                    row = conn.execute("select max(cast(id as integer)) from oauthtoken").fetchone()
                    token.set_id(str((row[0] or 0) + 1))
                values = (
                    token.get_id(), sig.get_name() if sig is not None else None, token.get_client_id(),
                    token.get_client_secret(), token.get_refresh_token(), token.get_access_token(),
                    token.get_grant_token(), token.get_expires_in(), token.get_redirect_url(),
                    token.get_api_domain(),
                )
                conn.execute("insert into oauthtoken values (" + ",".join(q(v) for v in values) + ")")
            conn.commit()
        finally:
            conn.close()

    def delete_token(self, id):
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("delete from oauthtoken where id=" + q(id))
            conn.commit()
        finally:
            conn.close()

    def get_tokens(self):
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute("select * from oauthtoken").fetchall()
        finally:
            conn.close()
        tokens = []
        for row in rows:
            t = object.__new__(OAuthToken)
            for setter in ("set_id", "set_user_signature", "set_client_id", "set_client_secret",
                           "set_refresh_token", "set_access_token", "set_grant_token",
                           "set_redirect_url", "set_expires_in", "set_api_domain"):
                getattr(t, setter)(None)
            self._merge(t, row)
            tokens.append(t)
        return tokens

    def delete_tokens(self):
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("delete from oauthtoken")
            conn.commit()
        finally:
            conn.close()

    def find_token_by_id(self, id):
        conn = sqlite3.connect(self.path)
        try:
            row = conn.execute("select * from oauthtoken where id=" + q(id)).fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        t = object.__new__(OAuthToken)
        for setter in ("set_id", "set_user_signature", "set_client_id", "set_client_secret",
                       "set_refresh_token", "set_access_token", "set_grant_token",
                       "set_redirect_url", "set_expires_in", "set_api_domain"):
            getattr(t, setter)(None)
        self._merge(t, row)
        return t

    @staticmethod
    def _merge(t, row):
        # DBStore.set_merge_data: fill what the token lacks.
        if t.get_id() is None:
            t.set_id(row[0])
        if t.get_user_signature() is None and row[1] is not None:
            t.set_user_signature(UserSignature(row[1]))
        if t.get_client_id() is None:
            t.set_client_id(row[2])
        if t.get_client_secret() is None:
            t.set_client_secret(row[3])
        if t.get_refresh_token() is None:
            t.set_refresh_token(row[4])
        if t.get_access_token() is None:
            t.set_access_token(row[5])
        if t.get_grant_token() is None:
            t.set_grant_token(row[6])
        if t.get_expires_in() is None and row[7] is not None:
            t.set_expires_in(str(row[7]))
        if t.get_redirect_url() is None:
            t.set_redirect_url(row[8])
        if t.get_api_domain() is None:
            t.set_api_domain(row[9])
