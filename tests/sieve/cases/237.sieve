# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["spamtestplus", "variables", "fileinto"]; if spamtest :percent :matches "*" { fileinto "pct-${0}"; }
