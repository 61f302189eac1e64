# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "variables", "fileinto"]; set "n" ""; foreverypart { set "n" "${n}x"; } fileinto "parts-${n}";
