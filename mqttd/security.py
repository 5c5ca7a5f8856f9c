"""`Security`: the `[auth]` config turned into the hooks the broker core calls.

Theory of operation. The core asks two questions (mqttd/auth/hooks.py): `authenticate`
once per CONNECT, and `authorise` before each PUBLISH is routed ("write"), each
SUBSCRIBE filter is granted ("subscribe") and each message is delivered ("read").
`Security` answers both from the password file, the ACL file, the plugin and the
listeners; the App hands its hooks to the `Broker` (and again after each `reload`, a
SIGHUP, which swaps the files without touching a connection).

This module sits beside app.py, above the core: it turns the configuration (config.py)
into the hooks of `mqttd.auth`; nothing below it imports it.

Who may connect (first rule that applies decides). A user name is an identity only
once something proved it: the password file, the SCRAM user file (a plain CONNECT
password checked against the user's verifier, or the MQTT 5 SCRAM exchange, which
broker/handshake.py runs without calling this hook), a certificate, or the plugin.

1. on a listener with `tls.use_identity_as_username`: the verified certificate's Common
   Name becomes the user name; no password is asked;
2. a user name found in the password file: its password must match (else 0x86);
3. a user name found in the SCRAM user file: the password must match its verifier;
4. a plugin is configured and `allow_anonymous` does not decide (any other user name,
   or no user name while allow_anonymous is unset): the plugin decides;
5. any other user name: refused with 0x86 when anything could give the name a meaning
   (authentication or an ACL file is configured), so an unproven name never gets that
   user's ACL rights or sessions; with neither, names mean nothing and the client is
   judged as anonymous (the name is only a label in the log);
6. anonymous: `allow_anonymous = true` accepts them everywhere, false nowhere; unset,
   only on listeners bound to a loopback address and only while no authentication is
   configured (as Mosquitto 2.0: configuring authentication turns anonymous access off).
   Connections from no configured listener (a bridge's in-process local leg) are judged
   by their peer's address alone, as before.

`check` (run by `load`) refuses a config where a listener on a non-loopback address
has no means of authentication (password file, SCRAM user file, plugin, certificate
identity) and `allow_anonymous` is not explicitly true: mqttd never silently serves the
network without authentication.

What a client may do: the ACL file when there is one (Mosquitto semantics, acl.py),
and the plugin's `authorise` when there is one; both must allow. Without either,
everything is allowed and the core skips the checks entirely (`Broker.authorise` is
None). Answers are cached per (action, client id, user name, topic); the cache is
emptied by a reload, so rights removed in the files apply at once, to deliveries on
existing subscriptions too.

Sessions belong to their user when authentication is on (a password file, a SCRAM user
file, a plugin or a certificate identity): see `Broker.session_owned_by_other`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from .auth.acl import Acl, AclError, Action
from .auth.hooks import Authorise, AuthResult, ConnectInfo
from .auth.limits import address_of, is_loopback_host
from .auth.password_file import PasswordFile, PasswordFileError
from .auth.plugin import AuthPlugin, PluginError, load_plugin
from .auth.scram import ScramUsers, saslprep
from .config import AuthConfig, Config, ConfigError, ListenerConfig
from .protocol.reason_codes import ReasonCode

__all__ = ["Security"]

logger = logging.getLogger("mqttd.auth")

# Cached authorise answers; emptied whole when full (answers are cheap to recompute).
_CACHE_SIZE = 100_000

_ACCEPTED = AuthResult()
_NOT_AUTHORIZED = AuthResult(ReasonCode.NOT_AUTHORIZED)
_BAD_PASSWORD = AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
_UNSPECIFIED = AuthResult(ReasonCode.UNSPECIFIED_ERROR)


@dataclass(frozen=True, slots=True)
class _ListenerRule:
    loopback: bool
    use_identity: bool


class Security:
    """Authentication and authorisation for one broker (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self._auth: AuthConfig = config.auth
        self._listener_configs: list[ListenerConfig] = list(config.listeners)
        self._listeners = _listener_rules(config.listeners)
        self.passwords: PasswordFile | None = None
        self.acl: Acl | None = None
        self.plugin: AuthPlugin | None = None
        #: The SCRAM users (`[auth] scram_file`); the App registers their SCRAM method.
        self.scram: ScramUsers | None = None
        self._cache: dict[tuple[str, str, str | None, str], bool] = {}
        self._loaded = False

    # -- what the config asks for -------------------------------------------------------

    @property
    def checks_access(self) -> bool:
        """True when an ACL file or a plugin says what clients may do."""
        return bool(self._auth.acl_file or self._auth.plugin)

    @property
    def authorise_hook(self) -> Authorise | None:
        """What `Broker.authorise` should be: `authorise`, or None when nothing is checked
        (the hot path then pays one None test). Read it again after a `reload`."""
        return self.authorise if self.checks_access else None

    @property
    def sessions_owned(self) -> bool:
        """True when authentication is on: sessions then belong to their user."""
        return self._authenticates

    @property
    def _authenticates(self) -> bool:
        """True when something can prove who a client is (see the module docstring)."""
        auth = self._auth
        return bool(
            auth.password_file
            or auth.scram_file
            or auth.plugin
            or any(rule.use_identity for rule in self._listeners.values())
        )

    def check(self) -> list[str]:
        """Config errors that forbid a start: exposed listeners without authentication."""
        auth = self._auth
        if auth.allow_anonymous is True or auth.password_file or auth.scram_file or auth.plugin:
            return []
        errors: list[str] = []
        for i, listener in enumerate(self._listener_configs):
            if is_loopback_host(listener.host):
                continue
            tls = listener.tls
            if tls is not None and tls.use_identity_as_username:
                continue
            if auth.allow_anonymous is False:
                why = "auth.allow_anonymous = false and no authentication is configured"
            else:
                why = "not a loopback address and no authentication is configured"
            errors.append(
                f'config error: listeners[{i}].host: "{listener.host}" is {why}: any '
                "client that can reach it would connect anonymously; set auth.password_file"
                " (or auth.scram_file, auth.plugin, tls.use_identity_as_username), or"
                " auth.allow_anonymous"
                " = true to serve anonymous clients on purpose"
            )
        return errors

    def load(self) -> None:
        """Check the config, read the password and ACL files, import the plugin.

        Raises `ConfigError` with one line per problem (the start is refused).
        """
        errors = self.check()
        passwords, acl, file_errors = _load_files(self._auth)
        errors += file_errors
        scram: ScramUsers | None = None
        if self._auth.scram_file:
            try:
                scram = ScramUsers.load(self._auth.scram_file)
            except (OSError, ValueError) as exc:
                errors.append(f"config error: auth.scram_file: {exc}")
        plugin: AuthPlugin | None = None
        if self._auth.plugin:
            try:
                plugin = load_plugin(self._auth.plugin, self._auth.plugin_options)
            except PluginError as exc:
                errors.append(f"config error: {exc}")
        if errors:
            raise ConfigError(errors)
        self.passwords, self.acl, self.plugin, self.scram = passwords, acl, plugin, scram
        self._cache.clear()
        self._loaded = True
        if passwords is not None:
            logger.info("auth: %d users in %s", len(passwords), self._auth.password_file)
        if scram is not None:
            logger.info("auth: %d SCRAM users in %s", len(scram), self._auth.scram_file)
        if acl is not None:
            logger.info("auth: ACL from %s", self._auth.acl_file)
        if plugin is not None:
            logger.info("auth: plugin %s", self._auth.plugin)

    # -- the hooks ----------------------------------------------------------------------

    def authenticate(self, info: ConnectInfo) -> AuthResult:
        """The CONNECT hook: accept, refuse, or accept under another name."""
        auth = self._auth
        if not self._loaded and (auth.password_file or auth.plugin or auth.scram_file):
            return _UNSPECIFIED  # files named but never loaded: fail closed
        rule = self._listeners.get(info.listener)
        if rule is not None and rule.use_identity:
            if info.identity is None:
                return _NOT_AUTHORIZED  # cannot happen with require_certificate; be safe
            return AuthResult(username=info.identity)
        username = info.username
        passwords = self.passwords
        if username is not None and passwords is not None and username in passwords:
            return _ACCEPTED if passwords.verify(username, info.password) else _BAD_PASSWORD
        if username is not None and self.scram is not None:
            verified = _verify_scram(self.scram, username, info.password)
            if verified is not None:
                return _ACCEPTED if verified else _BAD_PASSWORD
        allow_anonymous = auth.allow_anonymous
        if username is None and allow_anonymous is not None:
            return _ACCEPTED if allow_anonymous else _NOT_AUTHORIZED
        if self.plugin is not None:
            return self._plugin_authenticate(self.plugin, info)
        if username is not None and (self._authenticates or auth.acl_file):
            # Nothing proves this name: it must not get that user's rights or sessions.
            if passwords is not None:
                passwords.verify(username, info.password)  # the same cost as a known user
            return _BAD_PASSWORD
        # Anonymous (or a name that means nothing: no authentication, no ACL).
        if allow_anonymous is True:
            return _ACCEPTED
        if allow_anonymous is None:
            if rule is None:
                # A connection from no configured listener: a bridge's local leg (the
                # "$bridge" listener, in-process) or an embedding's own; judged by its
                # peer, as before issue 14 (it is not reachable from the network).
                if is_loopback_host(address_of(info.peer)):
                    return _ACCEPTED
            elif rule.loopback and not self._authenticates:
                return _ACCEPTED
        return _NOT_AUTHORIZED

    def authorise(self, client_id: str, username: str | None, action: str, topic: str) -> bool:
        """The ACL hook: may this client read, write or subscribe to `topic`?"""
        key = (action, client_id, username, topic)
        cache = self._cache
        allowed = cache.get(key)
        if allowed is not None:
            return allowed
        allowed = self._decide(client_id, username, cast(Action, action), topic)
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = allowed
        return allowed

    def _decide(self, client_id: str, username: str | None, action: Action, topic: str) -> bool:
        acl = self.acl
        if acl is None:
            if self._auth.acl_file:
                return False  # named but never loaded (load() not called): fail closed
        elif not acl.check(client_id, username, action, topic):
            return False
        plugin = self.plugin
        if plugin is None:
            return True
        try:
            return bool(plugin.authorise(client_id, username, action, topic))
        except Exception:
            logger.exception("auth plugin authorise(%r, %r) failed: denied", action, topic)
            return False

    def _plugin_authenticate(self, plugin: AuthPlugin, info: ConnectInfo) -> AuthResult:
        try:
            result = plugin.authenticate(info)
        except Exception:
            logger.exception("auth plugin authenticate(%r) failed: refused", info.client_id)
            return _UNSPECIFIED
        if not isinstance(result, AuthResult):
            logger.error("auth plugin returned %r, not an AuthResult: refused", result)
            return _UNSPECIFIED
        return result

    # -- reload (SIGHUP) ------------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Re-read the password and ACL files named in `config` (an App reload hook).

        No connection is dropped. Rights removed apply at once (the answer cache is
        emptied). A file that cannot be read or parsed leaves everything as it was (the
        error is logged). The plugin and the SCRAM user file are not reloaded: a change
        of `auth.plugin`, `plugin_options` or `scram_file` waits for the next start.
        """
        new = config.auth
        old = self._auth
        candidate = Security(config)
        candidate.plugin = self.plugin
        candidate._auth = _with_plugin(new, old)
        errors = candidate.check()
        passwords, acl, file_errors = _load_files(new)
        errors += file_errors
        if errors:
            for line in errors:
                logger.error("%s", line)
            logger.error("auth not reloaded: the running password file and ACL stay")
            return
        if (new.plugin, new.plugin_options) != (old.plugin, old.plugin_options):
            logger.warning("auth.plugin changed: applied at the next start")
        self._auth = candidate._auth
        self._listeners = candidate._listeners
        self._listener_configs = candidate._listener_configs
        self.passwords, self.acl = passwords, acl
        self._cache.clear()
        logger.info(
            "auth reloaded: %s, %s, allow_anonymous %s",
            f"{len(passwords)} users" if passwords is not None else "no password file",
            f"ACL {new.acl_file}" if acl is not None else "no ACL",
            {None: "on loopback", True: "true", False: "false"}[new.allow_anonymous],
        )


def _verify_scram(users: ScramUsers, username: str, password: bytes | None) -> bool | None:
    """A plain CONNECT password against `username`'s SCRAM verifier; None: no such user."""
    try:
        credentials = users.get(saslprep(username))
    except ValueError:
        return None  # a name SASLprep refuses cannot be in the file
    if credentials is None:
        return None
    if password is None:
        return False
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return credentials.verify_password(text)


def _listener_rules(listeners: list[ListenerConfig]) -> dict[str, _ListenerRule]:
    rules: dict[str, _ListenerRule] = {}
    for listener in listeners:
        tls = listener.tls
        rule = _ListenerRule(
            is_loopback_host(listener.host), tls is not None and tls.use_identity_as_username
        )
        found = rules.get(listener.name)
        if found is not None:
            # Two listeners with one name (possible in a Config built by hand): the
            # stricter of the two.
            rule = _ListenerRule(
                found.loopback and rule.loopback, found.use_identity and rule.use_identity
            )
        rules[listener.name] = rule
    return rules


def _load_files(auth: AuthConfig) -> tuple[PasswordFile | None, Acl | None, list[str]]:
    errors: list[str] = []
    passwords: PasswordFile | None = None
    acl: Acl | None = None
    if auth.password_file:
        try:
            passwords = PasswordFile.load(auth.password_file)
        except PasswordFileError as exc:
            errors.append(f"config error: auth.password_file: {exc}")
    if auth.acl_file:
        try:
            acl = Acl.load(auth.acl_file)
        except AclError as exc:
            errors.append(f"config error: auth.acl_file: {exc}")
    return passwords, acl, errors


def _with_plugin(new: AuthConfig, old: AuthConfig) -> AuthConfig:
    """`new`, but with the running plugin's settings (a plugin is not reloaded)."""
    from dataclasses import replace

    return replace(new, plugin=old.plugin, plugin_options=old.plugin_options)
