// Package e2e holds the dashboard's browser end-to-end tests: the repstream
// binary against a real Postgres, and the page in a real headless Chromium
// driven by chromedp. They build only with the tag e2e (`make e2e`) and need
// Debian's chromium package (or $REPSTREAM_CHROMIUM naming a Chromium or
// Chrome binary).
package e2e
