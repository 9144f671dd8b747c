import { hostWithTestGuest } from '../test/support/vm.js';
const { host, vmDir } = await hostWithTestGuest(process.argv[2]!);
console.log(JSON.stringify({ env: host.env, vmDir }));
