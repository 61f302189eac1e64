# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["regex", "variables", "fileinto"]; if address :regex "from" "^([a-z]+)@(.*)$" { fileinto "${2}.${1}"; }
