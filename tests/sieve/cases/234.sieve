# message: spam-low.eml
# from: alice@example.org
# to: bob+work@example.net
require ["spamtest", "variables", "fileinto"]; if spamtest :matches "*" { fileinto "score-${0}"; }
