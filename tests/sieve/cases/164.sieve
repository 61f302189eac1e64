# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["date", "variables", "fileinto"]; if date :matches :originalzone "date" "date" "*" { fileinto "d-${1}"; }
