require "fileinto";
fileinto "FromGlobal";
