# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "fileinto"]; set "n" ""; foreverypart :name "outer" { set "n" "${n}o"; foreverypart { set "n" "${n}i"; break :name "outer"; } } fileinto "x${n}";
