# message: nested.eml
# from: alice@example.org
# to: bob+work@example.net
require ["foreverypart", "mime", "variables", "extracttext", "fileinto"]; set "all" ""; foreverypart { if header :mime :type "content-type" "text" { extracttext :first 6 "t"; set "all" "${all}[${t}]"; } } fileinto "${all}";
