// Exposes the kit to the test driver.
import * as kit from "/authd.js";
window.kit = kit;
window.kitReady = true;
