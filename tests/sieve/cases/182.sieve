# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["regex", "variables", "fileinto"]; if header :regex "subject" "at ([0-9]+)" { fileinto "t${1}"; }
