// Runs before every npm script, on whatever Node is installed, so it is plain CommonJS that
// any version parses: an old Node gets one line naming the version it needs, and exit 1,
// instead of ERR_UNKNOWN_FILE_EXTENSION (or nothing at all from `npm run -s token`).
'use strict'
var path = require('path')
var required = require(path.join(__dirname, '..', '..', 'package.json')).engines.node

/** ">=22.18" and "22.17.1" → whether the running version is at least the required one. */
function satisfies(version, range) {
  var want = range.replace(/^>=\s*/, '').split('.').map(Number)
  var have = version.replace(/^v/, '').split('.').map(Number)
  for (var i = 0; i < 3; i++) {
    var a = have[i] || 0
    var b = want[i] || 0
    if (a !== b) return a > b
  }
  return true
}

module.exports = { satisfies: satisfies, required: required }

if (require.main === module && !satisfies(process.version, required)) {
  process.stderr.write('agent-gateway needs Node.js ' + required.replace(/^>=\s*/, '') + ' or newer (it runs its TypeScript directly); this is Node.js ' + process.version + '\n')
  process.exit(1)
}
