# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["regex", "variables", "fileinto"]; if header :regex "x-count" "^4[0-9]$" { fileinto "forties"; }
