"""``mailserver spam train ADDRESS --spam MBOX | --ham MAILDIR``: initial training from files, each message once."""

from __future__ import annotations

from tests.bayes.corpus import Corpus
from tests.test_cli import run


def _config(tmp_path):
    cfg = tmp_path / "mailserver.toml"
    cfg.write_text(f'hostname = "mail.example.test"\ndata_dir = "{tmp_path}/data"\n'
                   '[[domain]]\nname = "example.test"\n')
    return cfg


def _mbox(messages) -> bytes:
    out = b""
    for raw in messages:
        body = raw.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ")
        out += b"From MAILER-DAEMON Tue Dec  1 10:00:00 2026\n" + body + b"\n"
    return out


def test_spam_train_from_an_mbox_and_a_maildir_then_the_classifier_votes(tmp_path):
    cfg = _config(tmp_path)
    assert run(cfg, "user", "add", "bob@example.test", "--password-stdin", input="pw\n").returncode == 0, "account"
    corpus = Corpus()
    mbox = tmp_path / "spam.mbox"
    mbox.write_bytes(_mbox(corpus.message("spam", i) for i in range(25)))
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i in range(25):
        (maildir / ("cur" if i % 2 else "new") / f"{i}.host:2,S").write_bytes(corpus.message("ham", i))
    single = tmp_path / "one.eml"
    single.write_bytes(corpus.message("ham", 99).replace(b"\r\n", b"\n"))

    r = run(cfg, "spam", "train", "bob@example.test", "--spam", str(mbox))
    assert r.returncode == 0, r.stderr
    assert "25 trained as spam; now 25 spam, 0 ham" in r.stdout
    r = run(cfg, "spam", "train", "bob@example.test", "--ham", str(maildir), str(single))
    assert r.returncode == 0, r.stderr
    assert "26 trained as ham; now 25 spam, 26 ham" in r.stdout
    r = run(cfg, "spam", "train", "bob@example.test", "--spam", str(mbox))  # the same files again
    assert "25 already as spam; now 25 spam, 26 ham" in r.stdout
    r = run(cfg, "spam", "train", "bob@example.test", "--spam", str(single))  # the other way: flips
    assert "1 retrained as spam; now 26 spam, 25 ham" in r.stdout
    assert "26 spam, 25 ham" in run(cfg, "spam", "stats", "bob@example.test").stdout

    from mailserver import config as config_mod
    from mailserver.inbound import bayes
    from mailserver.inbound.classifier import token_ids
    from mailserver.service import open_store

    store = open_store(config_mod.load(str(cfg)))
    try:
        acct = store.get_account("bob@example.test")
        for kind, i in (("spam", 300), ("ham", 301)):
            ids = token_ids(corpus.message(kind, i))
            c = store.bayes_counts([acct.id], ids)[acct.id]
            p = bayes.probability(ids, bayes.Counts(c.spam, c.ham, c.tokens))
            assert (p > 0.5) == (kind == "spam"), (kind, p)
    finally:
        store.engine.dispose()


def test_spam_train_refuses_unknown_accounts_missing_files_and_needs_one_class(tmp_path):
    cfg = _config(tmp_path)
    run(cfg, "user", "add", "bob@example.test", "--password-stdin", input="pw\n")
    r = run(cfg, "spam", "train", "nobody@example.test", "--spam", str(tmp_path))
    assert r.returncode == 1 and "no account" in r.stderr
    r = run(cfg, "spam", "train", "bob@example.test", "--spam", str(tmp_path / "missing"))
    assert r.returncode == 1 and "no such file" in r.stderr
    assert run(cfg, "spam", "train", "bob@example.test").returncode == 2
    assert run(cfg, "spam", "train", "bob@example.test", "--spam", "a", "--ham", "b").returncode == 2
