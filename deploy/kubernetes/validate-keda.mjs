// Validates every keda.sh resource in the given YAML files against KEDA's CRD schemas
// (@kubernetes-models/keda, an ES module under $KEDA_MODELS/node_modules); exits 1 on the
// first invalid or unknown one.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = path.join(process.env.KEDA_MODELS, "node_modules");
const load = (rel) => import(pathToFileURL(path.join(modules, rel)).href);
const yaml = (await load("js-yaml/index.js")).default;

let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc || typeof doc.apiVersion !== "string" || !doc.apiVersion.startsWith("keda.sh/")) continue;
    const version = doc.apiVersion.split("/")[1];
    let Model;
    try {
      Model = (await load(`@kubernetes-models/keda/keda.sh/${version}/${doc.kind}.js`))[doc.kind];
    } catch (e) {
      console.error(`${file}: no KEDA schema for ${doc.apiVersion} ${doc.kind}: ${e.message}`);
      process.exit(1);
    }
    try {
      new Model(doc).validate();
    } catch (e) {
      console.error(`${file}: ${doc.kind}/${doc.metadata?.name}: ${e.message}`);
      process.exit(1);
    }
    checked += 1;
    console.log(`  ok ${doc.kind}/${doc.metadata.name} (${file.split("/").slice(-2).join("/")})`);
  }
}
if (checked === 0) {
  console.error("no KEDA resources found");
  process.exit(1);
}
