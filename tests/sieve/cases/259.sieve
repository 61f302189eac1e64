# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "fileinto"]; set "n" ""; foreverypart :name "outer" { set "n" "${n}o"; foreverypart :name "inner" { set "n" "${n}i"; } } fileinto "${n}";
