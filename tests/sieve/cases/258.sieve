# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "fileinto"]; set "t" ""; foreverypart { if header :mime :matches :contenttype "content-type" "*" { set "t" "${t} ${0}"; } } fileinto "${t}";
