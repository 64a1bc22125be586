// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title OCC Test Token
/// @notice A plain 18-decimal ERC-20 for the local dev chain and the tests; only the
///         deployer (owner) can mint.
contract TestToken is ERC20, Ownable {
    constructor() ERC20("OCC Test Token", "OCCT") Ownable(msg.sender) {}

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
