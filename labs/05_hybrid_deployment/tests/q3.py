OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert fixed_decide is not ... and fixed_decide('Where is my parcel?') is not None, 'not done yet: write fixed_decide'\n"
                                               '>>> _fixed = deploy.traffic.leak_test(fixed_decide, leak_day, policy)\n'
                                               '>>> assert _fixed[\'leaked\'] == 0, f"{_fixed[\'leaked\']} personal-data values still reached the paid API"\n',
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
