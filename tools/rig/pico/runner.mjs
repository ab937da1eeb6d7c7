// The emulated Raspberry Pi Pico of `citynode rig --board pico`: the real MicroPython rp2
// image on npm rp2040js (pinned in package.json), with what rp2040js 1.4.1 lacks for
// MicroPython filled in here (the numbered gaps of ../shared/rig/README.md, cited as "gap N").
//
//   node runner.mjs --image RPI_PICO.uf2 --bootrom bootrom-rp2040-b1.bin --flash FLASH.bin
//
// stdin/stdout are the USB CDC line (bytes from / to the host; tools/rig/pico.py bridges
// them to a pty). --ctl-fd N is a unix socket carrying JSON lines both ways:
//   in:  {"bme280": [adc_t, adc_p, adc_h]}   raw BME280 ADC values of the world (I2C0, 0x76)
//        {"calib": "<hex 26>", "calib_h": "<hex 7>"}  its trimming NVM (0x88.., 0xE1..)
//        {"uart1": "<hex>"}                  bytes the A02YYUW sends, fed at 9600 baud
//        {"adc": [ch, raw12]}                 the 4-20 mA shunt voltage on an ADC channel
//        {"echo_us": n}                       trigger/echo: echo pulse length (0: no echo)
//        {"rain_tips": n}                     the rain gauge's tips so far: each one not yet made
//                                             closes its reed switch on GPIO22 (counter "tips")
//        {"cut": "program"}                   power cut in the middle of the next flash program
//        {"report": true}                     answer with the counters now
//        {"lora_rx": {payload, rssi_dbm, snr_db, signal_rssi_dbm}}  a packet the SX1262 HAT receives
//        {"lora_header": {header_us, end_us}}  a packet starts on the air for it (its header after header_us)
//   out: {"ev": "tick", "ms": emulated ms since power on, "busy_ms": of them executing,
//         ...counters}  every 100 emulated ms
//        {"ev": "boot", "reason": "power_on"|"watchdog"|"reset", ...counters}
//        {"ev": "power_cut", ...counters} then the process exits (status 3)
//        {"ev": "lora_tx" | "lora_rx_on" | "lora_idle", ...}  the SX1262 HAT's radio (sx1262.mjs)
// FLASH.bin (2 MB, the Pico's W25Q16) is the flash: created from the UF2 when missing,
// written through on every erase and program, so killing this process loses nothing the
// chip had finished writing, like a real power cut.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { RP2040, USBCDC, ConsoleLogger, LogLevel } from 'rp2040js';
import { sx1262Device } from './sx1262.mjs';

const FLASH_SIZE = 2 * 1024 * 1024;
const SECTOR = 4096;
const NS_PER_CYCLE = 8; // 125 MHz

const args = {};
for (let i = 2; i + 1 < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const k of ['image', 'bootrom', 'flash']) {
  if (!args[k]) {
    process.stderr.write(`runner: --${k} is required\n`);
    process.exit(2);
  }
}

// ------------------------------------------------------------------ flash image

function loadUF2(data, flash) {
  // UF2: 512-byte blocks, magic 0x0A324655 0x9E5D5157, target address at 12, size at 16, payload at 32
  for (let off = 0; off + 512 <= data.length; off += 512) {
    const v = new DataView(data.buffer, data.byteOffset + off, 512);
    if (v.getUint32(0, true) !== 0x0a324655 || v.getUint32(4, true) !== 0x9e5d5157) continue;
    const addr = v.getUint32(12, true) - 0x10000000;
    const size = v.getUint32(16, true);
    if (addr >= 0 && addr + size <= FLASH_SIZE) flash.set(data.subarray(off + 32, off + 32 + size), addr);
  }
}

// rp2040js warns on every read of the inter-core FIFO (SIO 0x50 FIFO_ST, 0x58 FIFO_RD), which
// MicroPython polls; core 1 is not emulated (README "Not emulated"), so those lines are noise
const warn = console.warn;
console.warn = (...a) => {
  if (!/invalid SIO address: (50|58)\b/.test(String(a[0]))) warn(...a);
};

const flash = new Uint8Array(FLASH_SIZE).fill(0xff);
if (fs.existsSync(args.flash)) {
  flash.set(fs.readFileSync(args.flash).subarray(0, FLASH_SIZE));
} else {
  loadUF2(fs.readFileSync(args.image), flash);
  fs.writeFileSync(args.flash, flash);
}
const flashFd = fs.openSync(args.flash, 'r+');
const bootrom = new Uint32Array(new Uint8Array(fs.readFileSync(args.bootrom)).buffer);

// ------------------------------------------------------------------ control channel

const counters = { erases: 0, programs: 0, program_bytes: 0, watchdog_resets: 0, resets: 0, boots: 0, tips: 0 };
let ctl = null;
let ctlBuf = '';
const world = { bme280: [519888, 415148, 30000], calib: null, calibH: null, echoUs: 0, rainTips: 0 };
let cutArmed = null;

let busyCycles = 0; // cycles the core executed (not waiting in WFI/WFE): CPU time

function send(obj) {
  const now = { ms: emulatedMs(), busy_ms: (busyCycles * NS_PER_CYCLE) / 1e6 };
  if (ctl) ctl.write(JSON.stringify(Object.assign(obj, counters, now)) + '\n');
}

try {
  if (!args['ctl-fd']) throw new Error('stand-alone');
  ctl = new net.Socket({ fd: Number(args['ctl-fd']), readable: true, writable: true });
  ctl.on('data', (chunk) => {
    ctlBuf += chunk.toString();
    let nl;
    while ((nl = ctlBuf.indexOf('\n')) >= 0) {
      const line = ctlBuf.slice(0, nl);
      ctlBuf = ctlBuf.slice(nl + 1);
      if (line.trim()) control(JSON.parse(line));
    }
  });
  ctl.on('error', () => {});
  ctl.on('close', () => process.exit(0)); // the rig went away: power off
} catch {
  ctl = null; // stand-alone (no --ctl-fd): no world, no reports
}

function control(m) {
  if (m.bme280) world.bme280 = m.bme280;
  if (m.calib) world.calib = Buffer.from(m.calib, 'hex');
  if (m.calib_h) world.calibH = Buffer.from(m.calib_h, 'hex');
  if (m.uart1) sensorUart.push(...Buffer.from(m.uart1, 'hex'));
  if (m.adc) mcu.adc.channelValues[m.adc[0]] = m.adc[1];
  if (m.echo_us !== undefined) world.echoUs = m.echo_us;
  if (m.rain_tips !== undefined) {
    world.rainTips = m.rain_tips;
    if (gauge) gauge.kick();
  }
  if (m.cut) cutArmed = m.cut;
  if (m.report) send({ ev: 'report' });
  if (m.lora_rx && radio) radio.deliver(m.lora_rx);
  if (m.lora_header && radio) radio.heard(m.lora_header);
  wake();
}

// ------------------------------------------------------------------ the chip

let mcu;
let cdc;
let radio = null; // the SX1262 of the Pico-LoRa-SX1262 HAT (sx1262.mjs)
let gauge = null; // the tipping-bucket rain gauge on GPIO22 (rainGauge)
let msBase = 0; // emulated ms of earlier chips since power on (a reset builds a fresh chip)
let resetReason = null; // set by the watchdog: rebuild the chip between instructions
let scratch = null;
const hostIn = []; // bytes from the host waiting for an OUT transfer
const pendingReads = []; // OUT transfers the device armed while the host had nothing (gap 5)
const sensorUart = []; // bytes the A02YYUW has sent that the UART has not received yet
let uartAlarm = null;

function emulatedMs() {
  return mcu ? msBase + mcu.clock.nanos / 1e6 : msBase;
}

function romFunction(code) {
  // the boot ROM's function table: pointer at 0x14, entries (16-bit code, 16-bit address), 0-ended
  const rom16 = (a) => (bootrom[a >>> 2] >>> ((a & 2) * 8)) & 0xffff;
  for (let p = rom16(0x14); rom16(p); p += 4) {
    if (rom16(p) === code) return rom16(p + 2) & ~1;
  }
  throw new Error('boot ROM has no function ' + code.toString(16));
}

const ROM_ERASE = romFunction(0x4552); // 'RE' flash_range_erase (B1: 0x237c)
const ROM_PROGRAM = romFunction(0x5052); // 'RP' flash_range_program (B1: 0x23c4)

function patchRom(rom, addr, imm) {
  // gap 2: a BKPT #imm at the routine's entry; onBreak does the work and returns to LR
  const word = rom[addr >>> 2];
  const half = 0xbe00 | imm;
  rom[addr >>> 2] = addr & 2 ? (word & 0xffff) | (half << 16) : (word & 0xffff0000) | half;
}

function persist(offset, length) {
  fs.writeSync(flashFd, mcu.flash, offset, length, offset);
}

function flashErase(offset, count) {
  // flash_range_erase(flash_offs, count, block_size, block_cmd): whole 4 KB sectors to 0xFF
  if (offset % SECTOR || count % SECTOR || offset + count > FLASH_SIZE) return;
  mcu.flash.fill(0xff, offset, offset + count);
  counters.erases += count / SECTOR;
  persist(offset, count);
}

function flashProgram(offset, src, count) {
  // flash_range_program(flash_offs, data, count): NOR programming only clears bits (AND)
  if (offset + count > FLASH_SIZE) return;
  let n = count;
  if (cutArmed === 'program') n = count >> 1; // the power fails half way through this page
  for (let i = 0; i < n; i++) mcu.flash[offset + i] &= mcu.readUint8(src + i);
  counters.programs += 1;
  counters.program_bytes += n;
  persist(offset, count);
  if (n !== count) {
    fs.fsyncSync(flashFd);
    send({ ev: 'power_cut', offset, count });
    setTimeout(() => process.exit(3), 20);
    throw new PowerCut();
  }
}

class PowerCut extends Error {}

function bme280Device(i2c) {
  // gap 7 (the I2C block): a BME280 at 0x76 behind rp2040js's I2C callbacks, a register file
  // per the datasheet (section 5.3): chip id 0xD0 = 0x60, trimming at 0x88.. and 0xE1..,
  // ctrl_hum 0xF2, status 0xF3 (measuring bit 3), ctrl_meas 0xF4 (mode bits 1:0, forced = 01
  // or 10 starts one conversion and returns to sleep), config 0xF5, data 0xF7..0xFE
  // (press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb; a skipped channel reads 0x80000/0x8000).
  const regs = new Uint8Array(256);
  regs[0xd0] = 0x60;
  let ptr = 0;
  let first = false;
  let selected = false;
  function convert() {
    let [t, p, h] = world.bme280;
    if (!(regs[0xf4] >> 5)) t = 0x80000;
    if (!((regs[0xf4] >> 2) & 7)) p = 0x80000;
    if (!(regs[0xf2] & 7)) h = 0x8000;
    regs.set([p >> 12, (p >> 4) & 0xff, (p & 0xf) << 4, t >> 12, (t >> 4) & 0xff, (t & 0xf) << 4, h >> 8, h & 0xff], 0xf7);
  }
  function write(v) {
    if (first) {
      ptr = v;
      first = false;
      return;
    }
    if (ptr === 0xe0 && v === 0xb6) regs[0xf2] = regs[0xf4] = regs[0xf5] = 0; // soft reset
    else if (ptr === 0xf2 || ptr === 0xf5) regs[ptr] = v;
    else if (ptr === 0xf4) {
      regs[ptr] = v;
      if ((v & 3) === 1 || (v & 3) === 2) {
        convert(); // the conversion is done long before the driver polls (it waits the max time)
        regs[0xf4] &= 0xfc;
      } else if ((v & 3) === 3) convert();
    }
    ptr = (ptr + 1) & 0xff;
  }
  i2c.onConnect = (address, mode) => {
    selected = address === 0x76;
    first = mode === 0; // I2CMode.Write: the first byte is the register pointer
    if (world.calib) regs.set(world.calib, 0x88);
    if (world.calibH) regs.set(world.calibH, 0xe1);
    i2c.completeConnect(selected);
  };
  i2c.onWriteByte = (v) => {
    write(v);
    i2c.completeWrite(true);
  };
  i2c.onReadByte = () => {
    const v = regs[ptr];
    ptr = (ptr + 1) & 0xff;
    i2c.completeRead(v);
  };
}

function fixUart(uart) {
  // gap 4: PL011 TX interrupt semantics. rp2040js raises TXINTR on every interrupt check, so
  // MicroPython's UART IRQ handler (ports/rp2/machine_uart.c, uart_service_interrupt) never
  // returns. Here the TX FIFO drains at once: TXINTR is raised after a write and stays clear
  // after an ICR write, as on the PL011 (datasheet 4.2, UARTTXINTR).
  const TXINTR = 1 << 5;
  uart.checkInterrupts = function () {
    this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask));
  };
  const write = uart.writeUint32.bind(uart);
  uart.writeUint32 = (offset, value) => {
    write(offset, value);
    if (offset === 0) {
      uart.interruptStatus |= TXINTR;
      uart.checkInterrupts();
    }
  };
}

function feedSensorUart() {
  // the A02YYUW's bytes arrive at 9600 baud 8N1: one byte every 10 bits = 1.0417 ms
  if (sensorUart.length && !mcu.uart[1].rxFIFO.full) mcu.uart[1].feedByte(sensorUart.shift());
  uartAlarm.schedule(1041667);
}

function qspiDevice(rp2040) {
  // gap 3: the flash unique ID. pico_get_unique_board_id sends 0x4B + 4 dummy bytes through
  // the SSI with chip select forced low (IO_QSPI GPIO_QSPI_SS_CTRL OUTOVER = 2) and reads 8
  // bytes; answer them from the SSI data register. The id is a hash of the flash file's path,
  // so boards with different flash files differ, and one board keeps its id across runs.
  const id = createHash('sha256').update(path.resolve(args.flash)).digest().subarray(0, 8);
  const ssi = rp2040.peripherals[0x18000];
  const io = rp2040.peripherals[0x40018];
  let csLow = false;
  let index = 0;
  let cmd = 0;
  const rx = [];
  const ioWrite = io.writeUint32.bind(io);
  io.writeUint32 = (offset, value) => {
    if (offset === 0x0c) {
      const low = ((value >> 8) & 3) === 2;
      if (low && !csLow) {
        index = 0;
        rx.length = 0;
      }
      csLow = low;
      return;
    }
    ioWrite(offset, value);
  };
  const ssiRead = ssi.readUint32.bind(ssi);
  const ssiWrite = ssi.writeUint32.bind(ssi);
  ssi.writeUint32 = (offset, value) => {
    if (offset === 0x60 && csLow) {
      if (index === 0) cmd = value & 0xff;
      rx.push(cmd === 0x4b && index >= 5 && index < 13 ? id[index - 5] : 0);
      index++;
      return;
    }
    ssiWrite(offset, value);
  };
  ssi.readUint32 = (offset) => (offset === 0x60 && csLow ? rx.shift() ?? 0 : ssiRead(offset));
}

function pinLevels(rp2040) {
  // gap 7: pins. rp2040js keeps GPIO_IN at what the outside last set: a pin never reads its
  // own output, an open-drain line never its pull-up. Here each pin's level is the chip's
  // output when it drives the pin, else an outside device's (set()), else the pad's pull-up
  // or pull-down (RP2040 datasheet 2.19.4), else the last level. GPIO4/5 are the I2C0 bus
  // with the breakout's pull-ups: low while anyone pulls it low.
  const pins = rp2040.gpio;
  const outside = new Array(pins.length).fill(undefined);
  const SDA = 4;
  const SCL = 5;
  const bus = { sda: true, scl: true, pullSda: false, n: 0, bits: 0, state: 'idle' };
  const drivesLow = (p) => p.outputEnable && !p.outputValue;
  function put(pin, v) {
    if (pin.rawInputValue !== v) pin.setInputValue(v);
  }
  function level(i) {
    const p = pins[i];
    if (p.outputEnable) return p.outputValue;
    if (outside[i] !== undefined) return outside[i];
    if (p.pullupEnabled && !p.pulldownEnabled) return true;
    if (p.pulldownEnabled && !p.pullupEnabled) return false;
    return p.rawInputValue;
  }
  function i2cBus() {
    // MicroPython's i2c.scan() bit-bangs these pins (ports/rp2/machine_i2c.c sends a
    // zero-length write through extmod/machine_i2c.c's soft I2C): a bit-level responder ACKs
    // the BME280's address 0x76; the data phase runs on the I2C block (bme280Device)
    const sda = !(drivesLow(pins[SDA]) || bus.pullSda);
    const scl = !drivesLow(pins[SCL]);
    if (scl && bus.scl && sda !== bus.sda) {
      // SDA changes while SCL is high: START (falling) or STOP (rising)
      bus.state = sda ? 'idle' : 'addr';
      bus.n = 0;
      bus.bits = 0;
      bus.pullSda = false;
    } else if (scl && !bus.scl && bus.state === 'addr') {
      bus.bits = (bus.bits << 1) | (sda ? 1 : 0); // a bit is read on SCL rising
      bus.n += 1;
    } else if (!scl && bus.scl) {
      if (bus.state === 'addr' && bus.n === 8) {
        bus.state = bus.bits >> 1 === 0x76 ? 'ack' : 'idle';
        bus.pullSda = bus.state === 'ack'; // ACK: hold SDA low through the ninth clock
      } else if (bus.state === 'ack') {
        bus.state = 'idle';
        bus.pullSda = false;
      }
    }
    bus.scl = scl;
    bus.sda = !(drivesLow(pins[SDA]) || bus.pullSda);
    put(pins[SDA], bus.sda);
    put(pins[SCL], bus.scl);
  }
  function refresh(i) {
    if (i === SDA || i === SCL) i2cBus();
    else put(pins[i], level(i));
  }
  pins.forEach((p, i) => {
    p.addListener(() => refresh(i));
    refresh(i);
  });
  return {
    set(i, v) {
      outside[i] = v;
      refresh(i);
    },
  };
}

function echoPins(rp2040, wires) {
  // trigger/echo (GPIO14 out, GPIO15 in): a trigger pulse starts an echo pulse of the
  // world's round-trip time on the echo pin (HC-SR04 datasheet: 10 us trigger, echo high
  // for the flight time); no pulse when the world has no echo
  const trig = rp2040.gpio[14];
  wires.set(15, false);
  const end = rp2040.clock.createAlarm(() => wires.set(15, false));
  const start = rp2040.clock.createAlarm(() => {
    wires.set(15, true);
    end.schedule(world.echoUs * 1000);
  });
  let was = false;
  trig.addListener(() => {
    const high = trig.outputValue;
    if (was && !high && world.echoUs > 0) start.schedule(450 * 1000); // the burst leaves after ~450 us
    was = high;
  });
}

function rainGauge(rp2040, wires) {
  // A tipping-bucket rain gauge's reed switch between GPIO22 and GND; the pad's pull-up holds
  // the pin high (firmware/boards/mpboard.py gpio). Each tip closes the switch for 135 ms,
  // bouncing at the closing and at the opening: open again 0.25 ms after closing, closed at
  // 0.5 ms; closed again 0.25 ms after opening, open at 0.5 ms (TE525 data sheet: 135 ms
  // average closure, bounce settled within 0.75 ms). Tips the world owes come 1 s apart, as
  // fast as a bucket tips in a cloudburst (0.2 mm at 720 mm/h).
  const PIN = 22;
  const EDGES_US = [[0, false], [250, undefined], [500, false], [135000, undefined], [135250, false], [135500, undefined]];
  const GAP_US = 1000000;
  let step = -1; // the next edge of the tip under way; -1: none
  let armed = false;
  const next = (ns) => {
    armed = true;
    alarm.schedule(ns);
  };
  const alarm = rp2040.clock.createAlarm(() => {
    armed = false;
    if (step < 0) {
      if (counters.tips >= world.rainTips) return;
      counters.tips += 1;
      step = 0;
    }
    wires.set(PIN, EDGES_US[step][1]);
    step += 1;
    if (step < EDGES_US.length) next((EDGES_US[step][0] - EDGES_US[step - 1][0]) * 1000);
    else {
      step = -1;
      next((GAP_US - EDGES_US[EDGES_US.length - 1][0]) * 1000);
    }
  });
  return {
    kick() {
      if (!armed && counters.tips < world.rainTips) next(1000);
    },
  };
}

function build(reason) {
  // gap 8: every reset is a fresh chip with the same flash; WATCHDOG.REASON and SCRATCH0-7
  // survive a watchdog reset on silicon (RP2040 datasheet 4.7.2), a power-on clears them
  if (mcu) msBase += mcu.clock.nanos / 1e6;
  const prev = mcu;
  mcu = new RP2040();
  mcu.logger = new ConsoleLogger(LogLevel.Error);
  const rom = Uint32Array.from(bootrom);
  patchRom(rom, ROM_ERASE, 1);
  patchRom(rom, ROM_PROGRAM, 2);
  mcu.loadBootrom(rom); // gap 1: the npm package ships no boot ROM
  mcu.flash.set(prev ? prev.flash : flash);
  const wd = mcu.peripherals[0x40058];
  if (reason !== 'power_on' && prev) {
    const old = prev.peripherals[0x40058];
    wd.reason = old.reason;
    wd.scratchData.set(old.scratchData);
  }
  wd.onWatchdogTrigger = () => {
    resetReason = wd.reason === 1 ? 'watchdog' : 'reset'; // REASON.TIMER or REASON.FORCE
    // the chip goes down now: stop the timer, or rp2040js's periodic alarm (target 0, the
    // counter stays at 0) fires again at the same instant forever
    wd.alarm.enable = false;
    wd.timer.enable = false;
  };
  mcu.onBreak = (code) => {
    const core = mcu.core;
    const r = core.registers;
    if (code === 1) flashErase(r[0], r[1]);
    else if (code === 2) flashProgram(r[0], r[1], r[2]);
    else return;
    core.PC = core.LR & ~1; // return from the ROM routine
  };
  fixUart(mcu.uart[0]);
  fixUart(mcu.uart[1]);
  bme280Device(mcu.i2c[0]);
  qspiDevice(mcu);
  const wires = pinLevels(mcu);
  echoPins(mcu, wires);
  radio = sx1262Device(mcu, wires, send);
  gauge = rainGauge(mcu, wires);
  gauge.kick();
  uartAlarm = mcu.clock.createAlarm(feedSensorUart);
  uartAlarm.schedule(1041667);
  const tick = mcu.clock.createAlarm(() => {
    send({ ev: 'tick' });
    tick.schedule(100e6);
  });
  tick.schedule(100e6);
  cdc = new USBCDC(mcu.usbCtrl);
  cdc.onSerialData = (data) => process.stdout.write(Buffer.from(data));
  mcu.usbCtrl.onEndpointRead = (endpoint, size) => {
    // gap 5: complete an OUT transfer only when the host has data; rp2040js answers every
    // poll at once with a zero-length packet, and the idle REPL then burns the core
    if (endpoint !== cdc.outEndpoint) return;
    pendingReads.push(size);
    serveReads();
  };
  pendingReads.length = 0;
  hostIn.length = 0; // what the host sent the old chip is gone with it
  mcu.core.PC = 0x10000000; // boot2 from flash, as the rp2040js demo does
  counters.boots += 1;
  if (reason === 'watchdog') counters.watchdog_resets += 1;
  if (reason === 'reset') counters.resets += 1;
  send({ ev: 'boot', reason });
}

function serveReads() {
  while (pendingReads.length && hostIn.length) {
    const size = pendingReads.shift();
    const chunk = Uint8Array.from(hostIn.splice(0, size));
    mcu.usbCtrl.endpointReadDone(cdc.outEndpoint, chunk);
  }
}

process.stdin.on('data', (chunk) => {
  for (const b of chunk) hostIn.push(b);
  if (cdc && cdc.outEndpoint >= 0) serveReads();
  wake();
});
process.stdin.on('end', () => process.exit(0));

// ------------------------------------------------------------------ the run loop

// gap 6: time. rp2040js's Simulator skips idle time (WFI/WFE jump to the next alarm), so a
// device waiting for the host times out at once. Here idle time passes in wall time: while
// the core waits, the loop sleeps until its next alarm, or less when host data arrives.
let idleTimer = null;
let idleSince = 0;
let idleNanos = 0;

function wake() {
  if (idleTimer === null) return;
  clearTimeout(idleTimer);
  idleTimer = null;
  const slept = Math.min(idleNanos, (performance.now() - idleSince) * 1e6);
  mcu.clock.tick(slept);
  setImmediate(run);
}

function run() {
  try {
    runSlice();
  } catch (e) {
    if (e instanceof PowerCut) return; // the chip stops dead; the process exits shortly
    throw e;
  }
}

function runSlice() {
  const until = performance.now() + 20;
  const core = mcu.core;
  const clock = mcu.clock;
  for (;;) {
    for (let i = 0; i < 5000; i++) {
      if (resetReason) {
        const reason = resetReason;
        resetReason = null;
        build(reason);
        setImmediate(run);
        return;
      }
      if (core.waiting) {
        const dt = clock.nanosToNextAlarm;
        if (dt > 0 && dt < 1e6) {
          clock.tick(dt); // under a millisecond: not worth a timer
          continue;
        }
        idleNanos = dt > 0 ? dt : 10e6;
        idleSince = performance.now();
        idleTimer = setTimeout(wake, idleNanos / 1e6);
        return;
      }
      const cycles = core.executeInstruction();
      busyCycles += cycles;
      clock.tick(cycles * NS_PER_CYCLE);
    }
    if (performance.now() > until) break;
  }
  setImmediate(run);
}

build('power_on');
setImmediate(run);
